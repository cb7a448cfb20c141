"""Profiles as the API and the device detail show them (no key material: see service.redact)."""
from __future__ import annotations

from sqlalchemy.orm import Session

from ipad_mdm.models import Unit
from mdm import Device

from .models import (
    ConfigurationProfile, ProfileAssignment, ProfileDrift, ProfileInstallation, ProfileVersion,
)

from ipad_mdm.timefmt import iso

from .drift import list_drift
from .service import installations, redact

# --------------------------------------------------------------------------
# Serialization for the API and device detail
# --------------------------------------------------------------------------


def version_dict(v: ProfileVersion, *, with_payloads: bool = True) -> dict:
    d = {
        "version": v.version, "profile_uuid": v.profile_uuid, "display_name": v.display_name,
        "description": v.description, "removal_disallowed": v.removal_disallowed,
        "plist_sha256": v.plist_sha256, "created_by": v.created_by, "created_at": iso(v.created_at),
        "payload_types": [p.get("PayloadType") for p in v.payloads],
    }
    if with_payloads:
        d["payloads"] = redact(v.payloads)
    return d


def assignment_dict(session: Session, a: ProfileAssignment) -> dict:
    d = {"target": a.target_type, "created_by": a.created_by, "created_at": iso(a.created_at)}
    if a.device_id is not None:
        dev = session.get(Device, a.device_id)
        d["udid"] = dev.udid if dev else None
    if a.unit_id is not None:
        unit = session.get(Unit, a.unit_id)
        d["unit"] = unit.code if unit else None
    return d


def profile_summary(p: ConfigurationProfile) -> dict:
    return {"identifier": p.identifier, "display_name": p.display_name, "description": p.description,
            "current_version": p.current_version, "created_by": p.created_by,
            "created_at": iso(p.created_at), "updated_at": iso(p.updated_at)}


def profile_detail(session: Session, p: ConfigurationProfile) -> dict:
    d = profile_summary(p)
    d["versions"] = [version_dict(v) for v in p.versions]
    d["assignments"] = [assignment_dict(session, a) for a in p.assignments]
    counts: dict[str, int] = {}
    for row in installations(session, profile=p):
        counts[row.status] = counts.get(row.status, 0) + 1
    d["installation_counts"] = counts
    return d


def installation_dict(session: Session, row: ProfileInstallation) -> dict:
    dev = session.get(Device, row.device_id)
    return {"udid": dev.udid if dev else None, "identifier": row.profile.identifier,
            "version": row.version.version, "action": row.action, "status": row.status,
            "command_uuid": row.command_uuid, "requested_by": row.requested_by, "error": row.error,
            "updated_at": iso(row.updated_at), "installed_at": iso(row.installed_at),
            "removed_at": iso(row.removed_at)}


def drift_dict(d: ProfileDrift, device: Device | None = None) -> dict:
    out = {"identifier": d.identifier, "kind": d.kind, "expected_uuid": d.expected_uuid,
           "reported_uuid": d.reported_uuid, "is_enrollment_profile": d.is_enrollment_profile,
           "detected_at": iso(d.detected_at), "last_seen_at": iso(d.last_seen_at),
           "resolved_at": iso(d.resolved_at)}
    if device is not None:
        out["udid"] = device.udid
    return out


def device_detail(session: Session, device: Device, detail: dict) -> None:
    """Hook: the device page shows its profiles and open drift."""
    detail["profiles"] = {
        "installations": [installation_dict(session, r) for r in installations(session, device=device)],
        "drift": [drift_dict(d) for d, _ in list_drift(session, device=device)],
    }
