"""The scheduled evaluation of every enrolled device, in set-based passes.

1. Read pass (no row locks, one short transaction per slice): the columns the rules read, the
   verdicts, the newest identity of each device and the declarative facts, in a handful of
   queries for thousands of devices. On PostgreSQL the inventory comes as the reduction kept by
   its digest (compliance.digests), and the next slice is read while this one is evaluated.
2. In memory: every device's rules are evaluated and compared with its stored verdict. When
   nothing would change (same reasons, same policies, no deadline reached), the only write is
   `evaluated_at`, one UPDATE for the whole slice (on PostgreSQL from a thread of its own).
3. Write pass, only for devices whose verdict changes (or that have none yet): short
   transactions of at most WRITE_BATCH devices that lock those rows (SKIP LOCKED: a device in
   the middle of its own MDM session is left to that session's evaluation) and run
   `engine.evaluate_device`, the one owner of transitions and their actions. Rows are flushed
   once per batch; a batch that fails is retried device by device so one broken device is
   skipped, not the office.

So the periodic job never holds a long transaction, and check-ins are never blocked by it for
more than one small write batch. Python's cyclic garbage collector is paused for the run (below).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import defer

import declarative
from ipad_mdm.db import among
from ipad_mdm.hooks import Hooks
from mdm import Device, IdentityCertificate

from . import clock, digests
from .actions import announce_many
from .engine import NO_POLICY, PolicySet, evaluate_device, latest_identities, vpn_facts_of
from .facts import facts_of
from .models import DeviceVerdict
from .verdicts import remember_written
from .checks import evaluate_rules
from .rules import CertFacts

log = logging.getLogger("compliance")

READ_SLICE = 2000
WRITE_BATCH = 500

# What the rules and the comparison read (certificate lists, unlock tokens, push state are not):
# the inventory itself on SQLite; on PostgreSQL its digest and the reduced inventory kept with it
# (compliance.digests).
_DEVICE_COLUMNS = (
    Device.id, Device.udid, Device.unit_id, Device.enrollment_state, Device.os_version, Device.is_supervised,
    Device.lost_mode_enabled, Device.last_seen_at, Device.device_information_at, Device.security_info_at,
    Device.profile_list_at, Device.installed_applications_at, Device.ddm_enabled_at,
)
_INVENTORY_COLUMNS = (Device.device_information, Device.security_info, Device.profile_list,
                      Device.installed_applications, Device.ddm_status)
# reasons_vi / reasons_en are not read: they are written with failing_rules, which carries both texts.
_VERDICT_COLUMNS = (
    DeviceVerdict.device_id, DeviceVerdict.state, DeviceVerdict.failing_since, DeviceVerdict.grace_deadline,
    DeviceVerdict.non_compliant_at, DeviceVerdict.escalation_deadline, DeviceVerdict.inventory_since,
    DeviceVerdict.failing_rules, DeviceVerdict.policy_versions, DeviceVerdict.actions,
)


@contextlib.contextmanager
def _collector_paused():
    """A run keeps tens of thousands of rows and JSON values alive until their slice is done; the
    allocations made the cyclic collector rescan the whole process heap again and again — a quarter
    to a third of a 10,000-device run (bench/bench_compliance.py: 2.5 → 1.9 s first run, 1.0 → 0.7 s
    steady). What a run frees, reference counting frees; the collector resumes when it ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def evaluate_all(database, hooks: Hooks | None, now: dt.datetime | None = None, *, batch_size: int = WRITE_BATCH,
                 dispatcher=None) -> dict:
    """Evaluate every enrolled device. Returns counts and the devices to push after commit."""
    with _collector_paused():
        return _evaluate_all(database, hooks, now, batch_size=batch_size, dispatcher=dispatcher)


def _evaluate_all(database, hooks: Hooks | None, now: dt.datetime | None, *, batch_size: int,
                  dispatcher) -> dict:
    now = now or clock.now()
    counts: dict = {"evaluated": 0, "transitions": 0, "errors": 0, "unchanged": 0, "changed": 0}
    push: list[int] = []
    with database.session() as s:
        policies = PolicySet.load(s)
    # On PostgreSQL the evaluated_at of confirmed verdicts (an UPDATE of thousands of rows, a tenth
    # of a steady run, nearly all of it the database's work) is written from a thread of its own,
    # on its own connection, while this thread evaluates the next slice. (Write batches in threads
    # gained 5 % of a first run: their work is mostly Python, and Python runs one thread at a time.)
    versioned = digests.available(database)  # PostgreSQL, inventories numbered (compliance.digests)
    with _Background(database, "compliance-confirm") as confirm:
        for rows, devices, ddm_facts, vpn_facts, reduced in _slices(database, policies, versioned):
            unchanged, changed = [], []
            for row in rows:
                identity = CertFacts(row.not_after, row.revoked_at) if row.not_after is not None else None
                device = devices.get(row.id) if devices is not None else row
                if (row.device_id is not None and device is not None
                        and unchanged_verdict(device, row, policies, identity, ddm_facts.get(row.id), now,
                                              vpn_facts.get(row.id))):
                    unchanged.append(row.id)
                else:
                    changed.append(row.id)
            if unchanged:
                confirm.submit(_confirm, database, now, unchanged)
            confirmed = set(unchanged)
            # Kept for the devices confirmed unchanged only: the write pass locks the changed ones now.
            reduced = [r for r in reduced or () if r[0] in confirmed]
            if reduced:
                confirm.submit(digests.keep, database, now, reduced)
            counts["unchanged"] += len(unchanged)
            counts["evaluated"] += len(unchanged)
            for start in range(0, len(changed), batch_size):
                kept: list | None = [] if versioned else None
                done, transitions, errors, batch_push = _write(database, hooks, now, changed[start:start + batch_size],
                                                               dispatcher, kept=kept)
                if kept:
                    # Reduced and kept from the confirming thread: it fills this one's waits on the database.
                    confirm.submit(digests.keep_devices, database, now, kept)
                counts["evaluated"] += done
                counts["changed"] += done
                counts["transitions"] += transitions
                counts["errors"] += errors
                push.extend(batch_push)
    counts["push_device_ids"] = push
    return counts


def _slices(database, policies: PolicySet, versioned: bool):
    """Yields each slice: its rows; where inventories are numbered (`versioned`, compliance.digests)
    {device id: the device's columns with its reduced inventory} and the reduced inventories to keep,
    elsewhere None, None (the rows carry the inventory); its declarative and VPN facts. On PostgreSQL
    the next slice is read in a thread of its own while the caller evaluates this one: the database's
    part of a read (a fifth of a steady run) then runs on the other core."""
    postgresql = database.engine.dialect.name == "postgresql"

    def read(after_id: int):
        with database.session() as s:
            _custom_plans(s)
            rows = s.execute(_read_statement(after_id, versioned)).all()
            if not rows:
                return None
            devices, reduced = digests.inventories(s, rows) if versioned else (None, None)
            return (rows, devices, declarative.compliance_facts(s, rows), vpn_facts_of(s, policies, [r.id for r in rows]),
                    reduced)

    if not postgresql:
        got = read(0)
        while got is not None:
            yield got
            got = read(max(r.id for r in got[0]))
        return

    with ThreadPoolExecutor(1, thread_name_prefix="compliance-read") as pool:
        ahead = pool.submit(read, 0)
        while (got := ahead.result()) is not None:
            ahead = pool.submit(read, max(r.id for r in got[0]))
            yield got


def _confirm(database, now: dt.datetime, device_ids: list[int]) -> None:
    """The verdicts of these devices were evaluated at `now` and found unchanged."""
    with database.session() as s:
        s.execute(update(DeviceVerdict).where(among(s, DeviceVerdict.device_id, device_ids))
                  .values(evaluated_at=now).execution_options(synchronize_session=False))


class _Background:
    """Work a run hands off: on PostgreSQL to a thread of its own, each call in its own session and
    transaction; on SQLite (one writer at a time) done at once. The run does not end before every
    item is done; a failed item fails the run."""

    def __init__(self, database, name: str):
        self.database, self.name = database, name
        self.pool = None
        self.pending: list = []

    def __enter__(self):
        if self.database.engine.dialect.name == "postgresql":
            self.pool = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        return self

    def submit(self, fn, *args) -> None:
        if self.pool is None:
            fn(*args)
        else:
            self.pending.append(self.pool.submit(fn, *args))

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            if exc[0] is None:
                for future in self.pending:
                    future.result()  # raises the first failure
        return False


def evaluate_new_enrollments(session, hooks: Hooks | None, devices: list) -> list:
    """The first verdicts of a provisioning pass's new enrollments (mdm.provisioning), whose rows the
    pass has locked: their inputs in one query each for the whole batch, not per device."""
    policies, verdicts, identities, ddm_facts, vpn_facts = _inputs(session, devices)
    return [evaluate_device(session, hooks, d, trigger="enrolled", new_enrollment=True, locked=True, policies=policies,
                            identity=identities.get(d.id), verdict=verdicts.get(d.id),
                            declarative_facts=ddm_facts.get(d.id), vpn_facts=vpn_facts.get(d.id))
            for d in devices]


def _inputs(session, devices: list) -> tuple:
    """What evaluating these devices reads besides their rows, one query each for all of them: the
    policies, their verdicts, their newest identities, declarative and VPN facts."""
    ids = [d.id for d in devices]
    policies = PolicySet.load(session)
    verdicts = {v.device_id: v for v in session.scalars(select(DeviceVerdict).where(among(session, DeviceVerdict.device_id, ids)))}
    return (policies, verdicts, latest_identities(session, ids), declarative.compliance_facts(session, devices),
            vpn_facts_of(session, policies, ids))


def _custom_plans(session) -> None:
    """PostgreSQL plans the read for the slice it is given, every time. The driver prepares a
    statement on the server after five runs, and from then on PostgreSQL may switch to a generic
    plan that ignores where the slice starts. Here that plan read the whole fleet for each slice:
    a steady run went from 0.8 s to 1.9 s after its third run, and stayed there."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def _read_statement(after_id: int, versioned: bool):
    """One slice of enrolled devices with, in the same row, the verdict columns the comparison
    reads and the expiry/revocation of the device's newest identity.

    The slice's ids are chosen first, on their own (a narrow sort, if any), and only those rows are
    joined: with the whole-row join under ORDER BY … LIMIT, PostgreSQL sorted every remaining device
    with its inventory (16 MB on disk for 10,000) for each slice whenever its statistics lagged
    behind a bulk load. The newest identity is aggregated over the slice's identities only, not over
    every identity after the slice's start. Rows come back in no set order."""
    ids = (select(Device.id).where(Device.enrollment_state == "enrolled", Device.id > after_id)
           .order_by(Device.id).limit(READ_SLICE).cte("slice"))
    newest = (select(IdentityCertificate.device_id, func.max(IdentityCertificate.id).label("identity_id"))
              .join(ids, IdentityCertificate.device_id == ids.c.id).group_by(IdentityCertificate.device_id).subquery())
    inventory = digests.READ_COLUMNS if versioned else _INVENTORY_COLUMNS
    stmt = (select(*_DEVICE_COLUMNS, *inventory, *_VERDICT_COLUMNS, IdentityCertificate.not_after,
                   IdentityCertificate.revoked_at)
            .select_from(ids)
            .join(Device, Device.id == ids.c.id)
            .outerjoin(DeviceVerdict, DeviceVerdict.device_id == Device.id)
            .outerjoin(newest, newest.c.device_id == Device.id)
            .outerjoin(IdentityCertificate, IdentityCertificate.id == newest.c.identity_id))
    return digests.join(stmt) if versioned else stmt


def unchanged_verdict(device, verdict, policies: PolicySet, identity: CertFacts | None,
                      declarative_facts, now: dt.datetime, vpn_facts=None) -> bool:
    """True only when `engine.evaluate_device` would leave this verdict exactly as it is (apart
    from evaluated_at): same state, reasons, policies and actions, and no deadline reached or
    moved. Any doubt answers False and the device takes the full path."""
    eff = policies.for_unit(device.unit_id)
    facts = facts_of(device, identity, verdict.inventory_since, declarative_facts, vpn_facts)
    facts.accepted_versions = policies.accepted_versions
    outcome = evaluate_rules(eff.rules, facts, now)
    failures, unknown = outcome.failures, outcome.unknown
    if not eff.policy_versions:
        unknown = unknown + [NO_POLICY]
    reasons = failures or unknown
    if (verdict.policy_versions != eff.policy_versions or verdict.actions != list(eff.actions)
            or verdict.failing_rules != [f.as_dict() for f in reasons]):
        return False
    state = verdict.state
    if failures:
        if verdict.failing_since is None:
            return False
        if state == "grace":
            if outcome.immediate or eff.grace_hours == 0 or verdict.non_compliant_at is not None:
                return False
            deadline = verdict.failing_since + dt.timedelta(hours=eff.grace_hours)
            return verdict.grace_deadline == deadline and now < deadline
        if state == "non_compliant":
            if eff.escalation_hours is None:
                return verdict.escalation_deadline is None
            if verdict.non_compliant_at is None:
                return False
            deadline = verdict.non_compliant_at + dt.timedelta(hours=eff.escalation_hours)
            return verdict.escalation_deadline == deadline and now < deadline
        return state == "blocked"
    if state != ("unknown" if unknown else "compliant"):
        return False
    return state == "unknown" or (verdict.failing_since, verdict.grace_deadline, verdict.non_compliant_at,
                                  verdict.escalation_deadline) == (None, None, None, None)


def _write(database, hooks, now, ids: list[int], dispatcher, *, careful: bool = False,
           kept: list | None = None) -> tuple[int, int, int, list[int]]:
    """Evaluate `ids` for real in one short transaction. Returns (evaluated, transitions, errors, push ids).
    `careful`: flush after each device, so a failure is pinned on the device that caused it. `kept`
    (PostgreSQL) gets the devices evaluated, once committed, to keep their reduced inventories."""
    broken: set[int] = set()
    while True:
        try:
            evaluated, transitions, push = _write_once(database, hooks, now, [i for i in ids if i not in broken],
                                                       dispatcher, careful, kept)
            return evaluated, transitions, len(broken), push
        except _DeviceFailed as exc:
            broken.add(exc.device_id)  # rolled back: redo the batch without it
        except Exception:
            if careful:
                raise
            log.warning("compliance batch of %d devices failed as a whole; retrying device by device", len(ids))
            careful = True


class _DeviceFailed(Exception):
    def __init__(self, device_id: int):
        self.device_id = device_id


def _write_once(database, hooks, now, ids, dispatcher, careful, kept=None):
    if not ids:
        return 0, 0, []
    evaluated = transitions = 0
    push: list[int] = []
    with database.session(**({"dispatcher": dispatcher} if dispatcher is not None else {})) as s:
        # The rules never read the certificate list (the largest inventory value) or the unlock token:
        # left unloaded (a subscriber that wants them still gets them, loaded on access).
        stmt = (select(Device).options(defer(Device.certificate_list), defer(Device.unlock_token))
                .where(among(s, Device.id, ids), Device.enrollment_state == "enrolled").order_by(Device.id))
        if s.get_bind().dialect.name == "postgresql":
            # NO KEY UPDATE: conflicts with every evaluation's and every MDM session's lock on the row,
            # not with the KEY SHARE lock a concurrent insert of a row referring to the device takes
            # (a kept reduced inventory, a command): such a device was skipped for the whole run.
            stmt = stmt.with_for_update(skip_locked=True, of=Device, key_share=True)  # FOR NO KEY UPDATE
        devices = list(s.scalars(stmt))
        if not devices:
            return 0, 0, []
        policies, verdicts, identities, ddm_facts, vpn_facts = _inputs(s, devices)
        # New verdicts and transitions go in with one executemany each (pipelined by the driver),
        # not through the ORM's unit of work; careful mode keeps the ORM to pin a failure on a device.
        new_rows: list | None = None if careful else []
        announcements: list | None = None if careful else []
        for device in devices:
            try:
                res = evaluate_device(s, hooks, device, now, trigger="schedule", policies=policies,
                                      identity=identities.get(device.id), verdict=verdicts.get(device.id),
                                      declarative_facts=ddm_facts.get(device.id), vpn_facts=vpn_facts.get(device.id),
                                      new_rows=new_rows, announcements=announcements)
                if careful:
                    s.flush()
            except Exception:
                log.exception("evaluating device %s failed; skipped in this run", device.udid)
                raise _DeviceFailed(device.id) from None
            evaluated += 1
            transitions += len(res.transitions)
            if res.push_needed:
                push.append(device.id)
        # Their actions done by the subscribers that take batches once for the batch (the VPN's cut).
        announce_many(s, hooks or Hooks(), announcements)
        if new_rows:
            insert_rows(s, new_rows)
        remember_written(s, [*verdicts.values(), *(r for r in new_rows or () if r.model is DeviceVerdict)])
    if kept is not None:
        # Decoded here anyway (the rows were loaded whole, under lock, with their inventory's number).
        kept.extend(devices)
    return evaluated, transitions, push


def insert_rows(session, objects: list) -> None:
    """Insert transient ORM objects with one executemany per table, in the order given (verdicts
    before the transitions that name them), filling the Python-side column defaults the ORM would."""
    by_table: dict = {}
    plans: dict = {}
    for obj in objects:
        table = getattr(obj, "model", type(obj)).__table__
        plan = plans.get(table)
        if plan is None:
            plan = plans[table] = _column_plan(table)
        row = {}
        for key, primary_key, default in plan:
            value = getattr(obj, key, None)
            if value is None:
                if primary_key:
                    continue  # the database numbers it
                if default is not None:
                    value = default.arg(None) if callable(default.arg) else default.arg
            row[key] = value
        by_table.setdefault(table, []).append(row)
    for table, rows in by_table.items():
        if session.get_bind().dialect.name == "postgresql":
            _copy_in(session, table, rows)
        else:
            session.connection().execute(table.insert(), rows)


def _column_plan(table) -> list[tuple]:
    """(key, primary key?, Python-side default) of each column, read once per table and insert, not
    from the table's column collection for every row (20,000 rows in a first run)."""
    return [(c.key, c.primary_key, c.default) for c in table.columns]


def _copy_in(session, table, rows: list[dict]) -> None:
    """PostgreSQL: the rows go in through COPY on the session's own connection (same transaction): one
    stream instead of a statement per row. JSON columns are sent as the JSON text itself (COPY's text
    format takes it as it is): psycopg's JSON wrapper cost four times the encoding."""
    from sqlalchemy import JSON

    from ipad_mdm.db import json_dumps

    columns = list(rows[0])
    json_columns = [c for c in columns if isinstance(table.columns[c].type, JSON)]
    raw = session.connection().connection.driver_connection
    names = ", ".join(f'"{c}"' for c in columns)
    with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            for c in json_columns:
                if row[c] is not None:
                    row[c] = json_dumps(row[c])
            copy.write_row([row[c] for c in columns])
