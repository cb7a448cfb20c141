"""The verdict as other packages read it (the read model): VPN, gateway, console, API, reports.

compliance.engine writes DeviceVerdict rows; everyone else reads them through current_verdict,
which returns an immutable VerdictView. Whether a verdict lets a device open documents is not
decided here: that is the document gateway's single access decision.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ipad_mdm.db import transaction_state
from ipad_mdm.timefmt import iso

from .models import DeviceVerdict


@dataclass(frozen=True)
class VerdictView:
    """A device's verdict as other packages see it (VPN, document gateway, reports, API)."""

    device_id: int
    state: str
    since: dt.datetime
    evaluated_at: dt.datetime
    deadline: dt.datetime | None  # grace: end of grace; non_compliant: escalation deadline
    grace_deadline: dt.datetime | None
    escalation_deadline: dt.datetime | None
    failing_since: dt.datetime | None
    failing_rules: tuple = ()
    reasons_vi: tuple = ()
    reasons_en: tuple = ()
    policy_versions: tuple = ()
    actions: tuple = ()

    @property
    def cut_vpn(self) -> bool:
        """Whether the VPN should cut this device now (non_compliant/blocked and a policy asks for it)."""
        return self.state in ("non_compliant", "blocked") and "cut_vpn" in self.actions

    def to_dict(self) -> dict:
        return {
            "state": self.state, "since": iso(self.since), "evaluated_at": iso(self.evaluated_at),
            "deadline": iso(self.deadline), "grace_deadline": iso(self.grace_deadline),
            "escalation_deadline": iso(self.escalation_deadline), "failing_since": iso(self.failing_since),
            "failing_rules": list(self.failing_rules), "reasons_vi": list(self.reasons_vi),
            "reasons_en": list(self.reasons_en), "policy_versions": list(self.policy_versions),
            "actions": list(self.actions),
        }


def view_of(row) -> VerdictView:
    """From a DeviceVerdict, or a row of its columns."""
    deadline = row.grace_deadline if row.state == "grace" else row.escalation_deadline if row.state == "non_compliant" else None
    return VerdictView(
        device_id=row.device_id, state=row.state, since=row.since, evaluated_at=row.evaluated_at,
        deadline=deadline, grace_deadline=row.grace_deadline, escalation_deadline=row.escalation_deadline,
        failing_since=row.failing_since, failing_rules=tuple(row.failing_rules or ()),
        reasons_vi=tuple(row.reasons_vi or ()), reasons_en=tuple(row.reasons_en or ()),
        policy_versions=tuple(row.policy_versions or ()), actions=tuple(row.actions or ()),
    )


def current_verdict(session: Session, device_id: int) -> VerdictView | None:
    row = session.get(DeviceVerdict, device_id)
    return view_of(row) if row is not None else None


_WRITTEN = "compliance.written_verdicts"


def remember_written(session: Session, rows) -> None:
    """The verdicts a bulk evaluation holds for this transaction (ORM rows it changed, new rows it
    inserts itself): the gateway reads them back at commit, and a fifth of a first evaluation of
    the fleet went into reading and decoding what had just been written."""
    transaction_state(session, _WRITTEN, dict).update((row.device_id, row) for row in rows)


def current_verdicts(session: Session, device_ids) -> dict[int, VerdictView]:
    """The verdicts of many devices in one query (devices without one are absent)."""
    ids = list(device_ids)
    written = transaction_state(session, _WRITTEN) or {}
    known = {i: view_of(written[i]) for i in ids if i in written}
    return {**known, **_read_verdicts(session, [i for i in ids if i not in known])}


def _read_verdicts(session: Session, ids: list) -> dict[int, VerdictView]:
    from sqlalchemy import select

    if not ids:
        return {}
    if len(ids) <= 4:
        # A device's own request has just evaluated it: its row is in the session (no query).
        rows = (session.get(DeviceVerdict, i) for i in ids)
        return {row.device_id: view_of(row) for row in rows if row is not None}
    # Columns, not ORM objects: a bulk evaluation's commit reads hundreds at once (the gateway's access state).
    from ipad_mdm.db import among

    rows = session.execute(select(*DeviceVerdict.__table__.columns).where(among(session, DeviceVerdict.device_id, ids)))
    return {row.device_id: view_of(row) for row in rows}
