"""What devices report of their declarations, and the facts compliance reads from it.

The device's status item `management.declarations` lists every declaration it holds with its
server token, whether it is active and valid, and the reasons when not. It is mirrored into
DeclarationState rows (one per device and declaration) so the console, the API and the reports
query it directly.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from ipad_mdm.db import among, utcnow
from mdm import Device, ddm

from .models import Declaration, DeclarationAssignment, DeclarationState
from .reasons import describe_all
from .service import current

ENFORCEMENT = "com.apple.configuration.softwareupdate.enforcement.specific"
# TargetLocalDateTime is the device's local time; the office's iPads run on Vietnamese time.
DEVICE_ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
_KINDS = {"activations": "activation", "configurations": "configuration", "assets": "asset",
          "management": "management"}


def on_status_reported(session: Session, device: Device, report, changed) -> None:
    if "management.declarations" not in changed:
        return
    reported = ddm.status_value(device.ddm_status, "management.declarations") or {}
    now = utcnow()
    existing = {s.identifier: s for s in session.scalars(
        select(DeclarationState).where(DeclarationState.device_id == device.id))}
    seen = set()
    for key, kind in _KINDS.items():
        for entry in reported.get(key, []):
            ident = str(entry.get("identifier", ""))[:64]
            if not ident or ident in seen:
                continue
            seen.add(ident)
            row = existing.get(ident)
            if row is None:
                row = DeclarationState(device_id=device.id, identifier=ident, kind=kind)
                session.add(row)
            token = str(entry.get("server-token", ""))[:64]
            valid = entry.get("valid") if entry.get("valid") in ("valid", "invalid", "unknown") else "unknown"
            if valid == "invalid" and (row.valid != "invalid" or row.server_token != token or row.failing_since is None):
                row.failing_since = now
            elif valid != "invalid":
                row.failing_since = None
            row.kind, row.server_token, row.valid = kind, token, valid
            row.active = entry.get("active") is True
            reasons = entry.get("reasons")
            row.reasons = reasons if isinstance(reasons, list) and reasons else None
            row.updated_at = now
    gone = [i for i in existing if i not in seen]
    if gone:
        session.execute(delete(DeclarationState).where(DeclarationState.device_id == device.id,
                                                       DeclarationState.identifier.in_(gone)))


def states(session: Session, device_id: int) -> list[DeclarationState]:
    return list(session.scalars(select(DeclarationState).where(DeclarationState.device_id == device_id)
                                .order_by(DeclarationState.kind, DeclarationState.identifier)))


# ------------------------------------------------------------------ compliance facts
@dataclass
class Enforcement:
    identifier: str
    target_version: str
    target_build: str | None
    deadline_local: str          # yyyy-mm-ddThh:mm:ss, device local time
    deadline: dt.datetime        # the same instant in UTC

    def as_dict(self) -> dict:
        return {"identifier": self.identifier, "target_version": self.target_version,
                "target_build": self.target_build, "deadline_local": self.deadline_local,
                "deadline": self.deadline.isoformat()}


@dataclass
class DeclarativeFacts:
    """What compliance reads about one device's declarations."""

    enforcement: Enforcement | None = None
    failed: list[dict] = field(default_factory=list)  # [{"identifier", "kind", "reasons_vi", "reasons_en"}]


def _enforcement_of(decl: Declaration) -> Enforcement:
    p = current(decl).payload
    local = dt.datetime.strptime(p["TargetLocalDateTime"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=DEVICE_ZONE)
    return Enforcement(decl.identifier, p["TargetOSVersion"], p.get("TargetBuildVersion"), p["TargetLocalDateTime"],
                       local.astimezone(dt.timezone.utc))


def compliance_facts(session: Session, devices: list[Device]) -> dict[int, DeclarativeFacts]:
    """Facts for a batch of devices in two queries: the enforcement declarations that reach each
    device (the earliest deadline wins) and the declarations each reports invalid."""
    if not devices:
        return {}
    out = {d.id: DeclarativeFacts() for d in devices}
    rows = session.execute(select(Declaration, DeclarationAssignment).join(DeclarationAssignment)
                           .where(Declaration.type == ENFORCEMENT))
    rules = [(_enforcement_of(d), a) for d, a in rows]
    if rules:
        for device in devices:  # declaratively, or by ScheduleOSUpdate on the MDM-command path
            for enf, a in rules:
                if a.target_type == "all" or a.device_id == device.id or (a.unit_id is not None and a.unit_id == device.unit_id):
                    cur = out[device.id].enforcement
                    if cur is None or enf.deadline < cur.deadline:
                        out[device.id].enforcement = enf
    ids = [d.id for d in devices if d.ddm_enabled_at is not None]
    if ids:
        for s in session.scalars(select(DeclarationState).where(among(session, DeclarationState.device_id, ids),
                                                                DeclarationState.valid == "invalid")):
            out[s.device_id].failed.append({"identifier": s.identifier, "kind": s.kind,
                                            "reasons_vi": describe_all(s.reasons, "vi"),
                                            "reasons_en": describe_all(s.reasons, "en")})
    return out


def device_summary(session: Session, device: Device) -> dict:
    """The declarative part of a device's detail (API, CLI, console)."""
    st = states(session, device.id)
    status = {name: entry.get("value") for name, entry in (device.ddm_status or {}).items()
              if name != "management.client-capabilities"}
    return {
        "enabled": device.ddm_enabled_at is not None,
        "enabled_at": device.ddm_enabled_at.isoformat() if device.ddm_enabled_at else None,
        "status_at": device.ddm_status_at.isoformat() if device.ddm_status_at else None,
        "declarations": [{"identifier": s.identifier, "kind": s.kind, "server_token": s.server_token,
                          "active": s.active, "valid": s.valid, "reasons": s.reasons or [],
                          "reasons_vi": describe_all(s.reasons, "vi"), "reasons_en": describe_all(s.reasons, "en"),
                          "failing_since": s.failing_since.isoformat() if s.failing_since else None,
                          "updated_at": s.updated_at.isoformat()} for s in st],
        "errors": [{"identifier": s.identifier, "reasons": s.reasons or [], "reasons_vi": describe_all(s.reasons, "vi"),
                    "reasons_en": describe_all(s.reasons, "en")} for s in st if s.valid == "invalid"],
        "status": status,
    }


def reported_failures(session: Session, since: dt.datetime | None = None) -> list[DeclarationState]:
    stmt = select(DeclarationState).where(DeclarationState.valid == "invalid")
    if since is not None:
        stmt = stmt.where(or_(DeclarationState.failing_since >= since, DeclarationState.updated_at >= since))
    return list(session.scalars(stmt))
