"""The verdict state machine, actions, and bulk evaluation.

States and transitions
----------------------
Within one *non-compliance episode* (from the first failing evaluation until a
compliant one), a device only moves forward on this ladder:

    compliant ──fail──▶ grace ──grace deadline──▶ non_compliant ──escalation deadline──▶ blocked
        ▲                 │                            │                                   │
        └─────────────────┴──── all rules pass ────────┴───────────────────────────────────┘

  * grace deadline      = episode start + grace_hours (shortest of the applicable policies).
                          grace_hours 0, or an *immediate* failure (revoked/expired identity,
                          Lost Mode, MDM profile removed, no check-in) skips grace.
  * escalation deadline = the moment the device became non_compliant (the grace deadline,
                          not the time a scheduler happened to notice) + escalation_hours;
                          escalation_hours null on every policy = never blocked.
  * unknown             = no rule fails but some rule lacks inventory (e.g. SecurityInfo never
                          reported, or only inventory from a previous enrollment). The episode
                          clock is kept, so withholding inventory never resets a deadline.
  * checked out / retired devices go to non_compliant at once (they are no longer managed);
    the scheduled run ignores them afterwards.

If an evaluation finds several deadlines already passed (server down for a day), every
intermediate transition is recorded and its actions run, in order.

Actions (the union over applicable policies) run once per transition, inside the
transaction that records it, and are listed in the transition row:
  grace          notify
  non_compliant  notify, cut_vpn (requested via verdict.changed), block_gateway (deny)
  blocked        the same + lock_device (DeviceLock) + lost_mode (EnableLostMode, Vietnamese message)
  compliant      notify (if it was failing), cut_vpn restore requested, block_gateway allow
`verdict.changed(session, device, previous, verdict)` is emitted for every transition.

Concurrency: on PostgreSQL the device row is locked (FOR UPDATE) before its verdict
is read, so an inventory-triggered evaluation and the scheduled one never both act
on the same transition; the scheduled run uses SKIP LOCKED and leaves devices busy
in an MDM session to that session's own evaluation.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from typing import Iterable

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, joinedload

from ipad_mdm.db import among, hold, utcnow
from ipad_mdm.hooks import Hooks
import declarative
from mdm import Command, Device, IdentityCertificate
from mdm import commands as command_queue

from . import clock
from .actions import announce, run_actions
from .models import DeviceVerdict, Policy, VerdictTransition
from .action_specs import merge_actions
from .checks import evaluate_rules
from .facts import facts_of
from .rules import CertFacts, Failure, MergedRule, merge_rules
from .verdicts import view_of

log = logging.getLogger("compliance")

INVENTORY_KINDS = ("DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList", "InstalledApplicationList")

NO_POLICY = Failure("no_policy", False, "Chưa có chính sách bảo mật nào áp dụng cho thiết bị",
                    "No security policy applies to this device", {}, [])



# ------------------------------------------------------------------ effective policy
@dataclass
class Effective:
    """The strictest union of the policies that apply to one device."""

    rules: list[MergedRule]
    actions: dict[str, dict]
    grace_hours: int
    escalation_hours: int | None
    policy_versions: list[dict]


class PolicySet:
    """The enabled policies, loaded once and shared by many evaluations."""

    def __init__(self, policies: Iterable[Policy]):
        self._policies = [
            (p.id, p.version, p.name, p.assign_all, frozenset(p.unit_ids), list(p.rules or ()), list(p.actions or ()),
             p.grace_hours, p.escalation_hours)
            for p in policies
        ]
        self._cache: dict[int | None, Effective] = {}

    accepted_versions: dict = {}
    needs_vpn: bool = False  # a rule looks at the installed VPN and its tunnel (vpn.compliance_facts)

    @classmethod
    def load(cls, session: Session) -> "PolicySet":
        out = cls(session.scalars(  # the units joined: one statement, in every evaluation
            select(Policy).options(joinedload(Policy.units))
            .where(Policy.enabled.is_(True), Policy.deleted_at.is_(None)).order_by(Policy.id)).unique())
        if any(r.get("kind") == "app_min_version" for p in out._policies for r in p[5]):
            import apps

            out.accepted_versions = apps.accepted_versions(session)
        out.needs_vpn = any(r.get("kind", "").startswith("vpn_") for p in out._policies for r in p[5])
        return out

    def for_unit(self, unit_id: int | None) -> Effective:
        eff = self._cache.get(unit_id)
        if eff is None:
            eff = self._cache[unit_id] = self._build(unit_id)
        return eff

    def _build(self, unit_id: int | None) -> Effective:
        applicable = [p for p in self._policies if p[3] or (unit_id is not None and unit_id in p[4])]
        sources = [({"policy_id": p[0], "version": p[1]}, p[5]) for p in applicable]
        graces = [p[7] for p in applicable]
        escalations = [p[8] for p in applicable if p[8] is not None]
        return Effective(
            rules=merge_rules(sources),
            actions=merge_actions([p[6] for p in applicable]),
            grace_hours=min(graces) if graces else 0,
            escalation_hours=min(escalations) if escalations else None,
            policy_versions=[{"policy_id": p[0], "version": p[1], "name": p[2]} for p in applicable],
        )


def vpn_facts_of(session: Session, policies: PolicySet, device_ids: list[int]) -> dict:
    """The VPN facts of these devices, read only when a policy has a VPN rule."""
    if not policies.needs_vpn:
        return {}
    import vpn

    return vpn.compliance_facts(session, device_ids)


def latest_identities(session: Session, device_ids: list[int]) -> dict[int, CertFacts]:
    """Expiry and revocation of the most recently issued identity certificate of each device (the one
    it signs with): two columns, not the certificate rows."""
    if not device_ids:
        return {}
    newest = (select(IdentityCertificate.device_id, func.max(IdentityCertificate.id).label("id"))
              .where(among(session, IdentityCertificate.device_id, device_ids))
              .group_by(IdentityCertificate.device_id).subquery())
    rows = session.execute(select(IdentityCertificate.device_id, IdentityCertificate.not_after,
                                  IdentityCertificate.revoked_at).join(newest, IdentityCertificate.id == newest.c.id))
    return {device_id: CertFacts(not_after, revoked_at) for device_id, not_after, revoked_at in rows}


# ------------------------------------------------------------------ evaluation
@dataclass
class EvaluationResult:
    device_id: int
    state: str
    transitions: list[VerdictTransition] = field(default_factory=list)
    push_needed: bool = False  # a command was enqueued; the caller pushes after commit


def _lock_device(session: Session, device_id: int, *, skip_locked: bool = False) -> bool:
    """Serialise evaluations of one device across processes (PostgreSQL only)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    stmt = select(Device.id).where(Device.id == device_id).with_for_update(skip_locked=skip_locked)
    return session.scalar(stmt) is not None


def evaluate_device(session: Session, hooks: Hooks | None, device: Device, now: dt.datetime | None = None, *,
                    trigger: str = "api", policies: PolicySet | None = None,
                    identity: CertFacts | None | bool = False,
                    verdict: DeviceVerdict | None | bool = False,
                    new_enrollment: bool = False, declarative_facts=False, vpn_facts=False,
                    new_rows: list | None = None, announcements: list | None = None,
                    locked: bool = False) -> EvaluationResult:
    """Evaluate one device, store its verdict, record transitions and run their actions.

    Runs inside the caller's transaction; the caller commits. `policies`, `identity`
    and `verdict` let bulk callers pass preloaded rows (False = load here); `new_rows`: a bulk
    caller's list that receives the new verdict and transition rows instead of the session, and
    which the caller inserts in one statement each before committing (compliance.bulk);
    `announcements`: a bulk caller's list that receives the transitions to announce, which the caller
    passes to actions.announce_many before it inserts the rows.
    `new_enrollment`: inventory stored before now belongs to a previous enrollment
    of this device (it may have been wiped or handed over) and no longer counts.
    `locked`: the caller's transaction has already written the device's row (a TokenUpdate), so
    it holds the row lock that serialises evaluations of this device.
    """
    now = now or clock.now()
    hooks = hooks or Hooks()
    if verdict is False:
        if not locked:
            _lock_device(session, device.id)
        verdict = session.get(DeviceVerdict, device.id)
    if identity is False:
        identity = latest_identities(session, [device.id]).get(device.id)
    policies = policies or PolicySet.load(session)
    eff = policies.for_unit(device.unit_id)

    # The real clock, not clock.now(): compared with the mdm package's inventory timestamps.
    # Inventory stored before the current enrollment completed was an earlier enrollment's (the
    # iPad may have been wiped or handed over since). A device's first answers can arrive before its
    # provisioning pass has given it a verdict (mdm.provisioning): the same boundary holds then.
    completed = device.enrollment_completed_at
    if new_enrollment:
        inventory_since = completed or utcnow()
    else:
        inventory_since = verdict.inventory_since if verdict else completed
    if declarative_facts is False:
        declarative_facts = declarative.compliance_facts(session, [device]).get(device.id)
    if vpn_facts is False:
        vpn_facts = vpn_facts_of(session, policies, [device.id]).get(device.id)
    facts = facts_of(device, identity, inventory_since, declarative_facts, vpn_facts)
    facts.accepted_versions = policies.accepted_versions
    outcome = evaluate_rules(eff.rules, facts, now)
    failures, unknown = outcome.failures, outcome.unknown
    if not eff.policy_versions:
        # Nothing judged this device: it is not known to be safe (never "compliant" by default).
        unknown = unknown + [NO_POLICY]
    immediate = outcome.immediate
    if device.enrollment_state in ("checked_out", "retired"):
        failures = failures + [Failure(
            "enrollment", True, "Thiết bị đã rời khỏi hệ thống quản lý MDM (hồ sơ MDM bị gỡ hoặc thiết bị đã bị loại bỏ)",
            "The device has left MDM management (MDM profile removed or device retired)",
            {"enrollment_state": device.enrollment_state}, [])]
        immediate = True

    previous = view_of(verdict) if verdict is not None else None
    if verdict is None:
        verdict = _new_row(session, new_rows, DeviceVerdict, device_id=device.id, state="unknown", since=now,
                           evaluated_at=now, failing_rules=[], reasons_vi=[], reasons_en=[], policy_versions=[],
                           actions=[])
        prev_state = None
    else:
        prev_state = verdict.state
    if verdict.inventory_since != inventory_since:
        verdict.inventory_since = inventory_since

    # Walk the ladder; each step is one transition.
    steps: list[str] = []
    state = prev_state
    if failures:
        if verdict.failing_since is None:
            verdict.failing_since = now
        for _ in range(4):
            nxt = None
            if state in (None, "compliant", "unknown"):
                if immediate or eff.grace_hours == 0:
                    nxt = "non_compliant"
                    verdict.non_compliant_at = verdict.non_compliant_at or now
                else:
                    verdict.grace_deadline = verdict.failing_since + dt.timedelta(hours=eff.grace_hours)
                    if verdict.non_compliant_at is not None or now >= verdict.grace_deadline:
                        # Resuming an episode whose grace was already used up.
                        nxt = "non_compliant"
                        verdict.non_compliant_at = verdict.non_compliant_at or verdict.grace_deadline
                    else:
                        nxt = "grace"
            elif state == "grace":
                # Re-derived each time so that shortening a policy's grace takes effect.
                verdict.grace_deadline = verdict.failing_since + dt.timedelta(hours=eff.grace_hours)
                if immediate:
                    nxt, verdict.non_compliant_at = "non_compliant", now
                elif now >= verdict.grace_deadline:
                    nxt, verdict.non_compliant_at = "non_compliant", verdict.grace_deadline
            elif state == "non_compliant":
                if eff.escalation_hours is not None and device.enrollment_state == "enrolled":
                    verdict.escalation_deadline = verdict.non_compliant_at + dt.timedelta(hours=eff.escalation_hours)
                    if now >= verdict.escalation_deadline:
                        nxt = "blocked"
                else:
                    verdict.escalation_deadline = None
            if nxt is None:
                break
            steps.append(nxt)
            state = nxt
        if state == "non_compliant" and eff.escalation_hours is not None and verdict.non_compliant_at is not None:
            verdict.escalation_deadline = verdict.non_compliant_at + dt.timedelta(hours=eff.escalation_hours)
        reasons = failures
    else:
        target = "unknown" if unknown else "compliant"
        if target != state:
            steps.append(target)
            state = target
        if target == "compliant":
            verdict.failing_since = verdict.grace_deadline = verdict.non_compliant_at = verdict.escalation_deadline = None
        reasons = unknown

    _set(verdict, "failing_rules", [f.as_dict() for f in reasons])
    _set(verdict, "reasons_vi", [f.reason_vi for f in reasons])
    _set(verdict, "reasons_en", [f.reason_en for f in reasons])
    _set(verdict, "policy_versions", eff.policy_versions)
    _set(verdict, "actions", list(eff.actions))
    verdict.evaluated_at = now

    result = EvaluationResult(device.id, state)
    if not steps and previous is not None and (
            (previous.grace_deadline, previous.escalation_deadline) != (verdict.grace_deadline, verdict.escalation_deadline)
            or previous.failing_rules != tuple(verdict.failing_rules)):
        # Same state, moved deadline (a policy's grace changed) or other reasons: what others
        # precomputed from the verdict (the gateway's access state) must see it.
        hooks.emit("verdict.updated", session=session, device=device, verdict=view_of(verdict))
    from_state = prev_state
    before = previous
    for to_state in steps:
        verdict.state = to_state
        verdict.since = now
        after = view_of(verdict)
        taken = run_actions(session, device, eff, from_state, to_state, after, result)
        # A bulk caller announces the transitions of all its devices at once (announce_many), and
        # writes their actions into the rows then.
        actions = announce(session, hooks, device, before, after, taken) if announcements is None else taken
        # The row is made once its actions are known: one INSERT, not an INSERT (flushed by a
        # verdict.changed subscriber's query) and an UPDATE of its actions.
        row = _new_row(
            session, new_rows, VerdictTransition,
            device_id=device.id, udid=device.udid, unit_id=device.unit_id, from_state=from_state, to_state=to_state,
            at=now, trigger=trigger[:64], grace_deadline=after.grace_deadline,
            escalation_deadline=after.escalation_deadline, policy_versions=eff.policy_versions,
            failing_rules=list(after.failing_rules), reasons_vi=list(after.reasons_vi),
            reasons_en=list(after.reasons_en), actions=actions,
            actions_pending=any(a.get("status") == "failed" for a in actions),
        )
        result.transitions.append(row)
        if announcements is not None:
            announcements.append((row, device, before, after, taken))
        log.info("compliance: device %s %s -> %s (%s) [%s]", device.udid, from_state, to_state,
                 "; ".join(verdict.reasons_en) or "all rules pass", trigger)
        from_state, before = to_state, after
    verdict.state = state
    if new_rows is None:
        hold(session, verdict)  # the gateway's access state reads it again at commit
    return result


class NewRow:
    """A row compliance.bulk inserts itself (COPY or one executemany per table): plain attributes, every column
    present (None until set), none of the ORM's per-attribute bookkeeping, which was a third of a first
    evaluation of the whole fleet."""

    def __init__(self, model, values: dict):
        self.__dict__.update(dict.fromkeys(model.__table__.columns.keys()), **values)
        self.model = model


def _new_row(session: Session, new_rows: list | None, model, **values):
    if new_rows is None:
        row = model(**values)
        session.add(row)
    else:
        row = NewRow(model, values)
        new_rows.append(row)
    return row


def _set(row, attr: str, value) -> None:
    # JSON columns compare by value here so an unchanged verdict is not rewritten.
    if getattr(row, attr) != value:
        setattr(row, attr, value)


# ------------------------------------------------------------------ bulk
def evaluate_all(database, hooks: Hooks | None, now: dt.datetime | None = None, *, batch_size: int = 500,
                 dispatcher=None) -> dict:
    """Evaluate every enrolled device in set-based passes (compliance.bulk)."""
    from .bulk import evaluate_all as run

    return run(database, hooks, now, batch_size=batch_size, dispatcher=dispatcher)


def inventory_interval_hours(instance=None) -> float:
    """IPAD_MDM_INVENTORY_INTERVAL_HOURS (default 12: twice inside the baseline policy's 24-hour
    check-in window, so a device that answers is never judged silent); settings.extra may override."""
    extra = getattr(getattr(instance, "settings", None), "extra", None) or {}
    raw = extra.get("inventory_interval_hours", os.environ.get("IPAD_MDM_INVENTORY_INTERVAL_HOURS"))
    try:
        value = float(raw) if raw not in (None, "") else 12.0
    except ValueError:
        log.error("IPAD_MDM_INVENTORY_INTERVAL_HOURS=%r is not a number; using 12", raw)
        return 12.0
    return value if value > 0 else 12.0


def request_stale_inventory(database, now: dt.datetime | None = None, *, interval_hours: float = 12.0,
                            limit: int = 2000) -> list[int]:
    """Queue the five inventory queries for devices whose oldest inventory is too old.

    A kind already queued or sent (device offline) is not queued again, so an iPad
    that is away for a week does not come back to 35 identical commands.
    Returns the device ids to push (after this function's commit).
    """
    now = now or clock.now()
    cutoff = now - dt.timedelta(hours=interval_hours)
    stale = or_(*[
        or_(getattr(Device, f"{attr}_at").is_(None), getattr(Device, f"{attr}_at") < cutoff)
        for attr in ("device_information", "security_info", "profile_list", "certificate_list", "installed_applications")
    ])
    pushed: list[int] = []
    with database.session() as s:
        devices = list(s.scalars(select(Device).where(Device.enrollment_state == "enrolled", stale)
                                 .order_by(Device.id).limit(limit)))
        if not devices:
            return []
        ids = [d.id for d in devices]
        pending = {(d, t) for d, t in s.execute(
            select(Command.device_id, Command.request_type).where(
                and_(Command.device_id.in_(ids), Command.request_type.in_(INVENTORY_KINDS),
                     Command.status.in_(("queued", "sent", "notnow")))))}
        for device in devices:
            queued = False
            for kind in INVENTORY_KINDS:
                if (device.id, kind) not in pending:
                    command_queue.enqueue(s, device, kind, requested_by="compliance:inventory")
                    queued = True
            if queued or device.push_pending:
                pushed.append(device.id)
    return pushed
