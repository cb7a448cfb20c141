"""May this device open the office's documents now? The one owner of that decision.

`/docs/`, the API (`GET /api/v1/devices/<udid>/verdict` → document_access) and the console
all ask here. gate.py first establishes who the device is (its certificate, through mdm);
then `device_access` decides from the device's state, its leader and its compliance verdict
(first failing check wins):

  device retired / checked out / not enrolled / in Lost Mode       denied
  no leader assigned / leader inactive                              denied
  verdict compliant                                                 allowed
  verdict grace, before its deadline                                allowed, with a warning
        (grace is the time the policy gives a leader to fix a problem; after the deadline this
        denies even if the scheduler has not moved the verdict on yet)
  grace past its deadline, non_compliant, blocked                   denied — whatever the policy's
        actions say: for documents the office wants fail-closed
  unknown, or no verdict yet                                        denied (no evidence it is safe;
        "no policy applies" gets its own reason)
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from compliance import VerdictView, clock, current_verdict

from .models import Leader
from .service import current_assignment


@dataclass(frozen=True)
class Access:
    allowed: bool
    code: str
    grace_deadline: dt.datetime | None = None


def verdict_access(verdict: VerdictView | None, now: dt.datetime | None = None) -> Access:
    """The verdict part of the decision."""
    now = now or clock.now()
    if verdict is None:
        return Access(False, "verdict_unknown")
    if verdict.state == "compliant":
        return Access(True, "allowed")
    if verdict.state == "grace":
        deadline = verdict.grace_deadline or verdict.deadline
        if deadline is not None and now < deadline:
            return Access(True, "allowed_grace", deadline)
        return Access(False, "grace_expired")
    if verdict.state == "blocked":
        return Access(False, "verdict_blocked")
    if verdict.state == "non_compliant":
        return Access(False, "verdict_non_compliant")
    if any(isinstance(r, dict) and r.get("rule") == "no_policy" for r in verdict.failing_rules):
        return Access(False, "verdict_unassessed")
    return Access(False, "verdict_unknown")


def device_access(device, leader: Leader | None, verdict: VerdictView | None,
                  now: dt.datetime | None = None) -> Access:
    if device.enrollment_state == "retired":
        return Access(False, "device_retired")
    if device.enrollment_state == "checked_out":
        return Access(False, "device_checked_out")
    if device.enrollment_state != "enrolled":
        return Access(False, "device_not_enrolled")
    if device.lost_mode_enabled:
        return Access(False, "lost_mode")
    if leader is None:
        return Access(False, "not_assigned")
    if not leader.active:
        return Access(False, "leader_inactive")
    return verdict_access(verdict, now)


def leader_of(session, device) -> Leader | None:
    assignment = current_assignment(session, device.id)
    return session.get(Leader, assignment.leader_id) if assignment is not None else None


def describe(session, device, out: dict) -> None:
    """The `access.describe` hook: what the API and console show as the device's document access."""
    access = device_access(device, leader_of(session, device), current_verdict(session, device.id))
    out["document_access"] = access.allowed
    out["document_access_reason"] = access.code
    if access.grace_deadline is not None:
        out["document_access_until"] = access.grace_deadline.isoformat()
