"""Drift: what a device reports (ProfileList) against what the server installed there.

`reconcile` runs on every ProfileList answer and opens / resolves ProfileDrift rows
(missing, unexpected, outdated).
"""
from __future__ import annotations

import logging
import plistlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.crypto import cms
from ipad_mdm.db import utcnow
from mdm import Command, Device

from .models import ProfileDrift
from .service import ENROLLMENT_SUFFIX, installations, is_enrollment_identifier

log = logging.getLogger("profiles.service")

# --------------------------------------------------------------------------
# Reconciliation
# --------------------------------------------------------------------------


def _reported(profile_list) -> dict[str, dict]:
    """identifier -> {"uuids": set, "managed": bool} from a stored ProfileList."""
    out: dict[str, dict] = {}
    # Stored inventory is whatever the device sent: tolerate any shape.
    for entry in profile_list if isinstance(profile_list, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("PayloadIdentifier"), str):
            continue
        item = out.setdefault(entry["PayloadIdentifier"], {"uuids": set(), "managed": False})
        if isinstance(entry.get("PayloadUUID"), str):
            item["uuids"].add(entry["PayloadUUID"].upper())
        item["managed"] = item["managed"] or bool(entry.get("IsManaged", False))
    return out


# command uuid -> (PayloadIdentifier, PayloadUUID) of an InstallProfile; commands never change.
_SENT_CACHE: dict[str, tuple[str, str] | None] = {}
_SENT_CACHE_MAX = 20000


def _sent_profile(cmd: Command) -> tuple[str, str] | None:
    if cmd.uuid in _SENT_CACHE:
        return _SENT_CACHE[cmd.uuid]
    ref = None
    try:
        command = plistlib.loads(cmd.command_plist)["Command"]
        if command.get("ProfileIdentifier"):
            # The payload (it may hold keys) is forgotten once answered; mdm keeps the reference.
            ref = (command["ProfileIdentifier"], command["ProfileUUID"])
            _SENT_CACHE[cmd.uuid] = ref
            return ref
        payload = command["Payload"]
        try:
            # Our own stored command: the content is what we signed, no need to re-verify.
            content = cms.parse_signed_data(payload)["encap_content_info"]["content"].native
        except cms.CMSError:
            content = payload  # sent unsigned
        profile = plistlib.loads(content)
        ref = (profile["PayloadIdentifier"], str(profile["PayloadUUID"]).upper())
    except Exception:  # a malformed historic command must not break reconciliation
        log.warning("cannot read the profile of InstallProfile %s", cmd.uuid)
    if len(_SENT_CACHE) >= _SENT_CACHE_MAX:
        _SENT_CACHE.clear()
    _SENT_CACHE[cmd.uuid] = ref
    return ref


def server_sent_profiles(session: Session, device: Device) -> dict[str, str]:
    """identifier -> PayloadUUID of every profile this server installed on the
    device (acknowledged InstallProfile not followed by an acknowledged
    RemoveProfile), whichever package sent it (VPN, identity renewal, ...).
    Packages need not register anything for their profiles to count as expected."""
    cmds = session.scalars(select(Command).where(
        Command.device_id == device.id, Command.request_type.in_(("InstallProfile", "RemoveProfile")),
        Command.status == "acknowledged").order_by(Command.completed_at, Command.id))
    state: dict[str, str] = {}
    for cmd in cmds:
        if cmd.request_type == "RemoveProfile":
            ident = _removed_identifier(cmd)
            state.pop(ident, None)
            continue
        ref = _sent_profile(cmd)
        if ref is not None:
            state[ref[0]] = ref[1]
    return state


def _removed_identifier(cmd: Command) -> str | None:
    try:
        return plistlib.loads(cmd.command_plist)["Command"]["Identifier"]
    except Exception:
        return None


def reconcile(session: Session, settings, device: Device) -> list[ProfileDrift]:
    """Compare the device's ProfileList with the server's belief; returns open drift."""
    reported = _reported(device.profile_list)
    now = utcnow()
    found: dict[tuple[str, str], dict] = {}  # (identifier, kind) -> details

    rows = installations(session, device=device)
    known = {row.profile.identifier: row for row in rows}
    for row in rows:
        ident = row.profile.identifier
        rep = reported.get(ident)
        expected_uuid = row.version.profile_uuid.upper()
        if row.action == "install" and row.status == "installed":
            if rep is None:
                found[(ident, "missing")] = {"expected_uuid": expected_uuid}
            elif expected_uuid not in rep["uuids"]:
                found[(ident, "outdated")] = {"expected_uuid": expected_uuid,
                                              "reported_uuid": ",".join(sorted(rep["uuids"]))[:64]}
        elif row.status == "removed" and rep is not None:
            found[(ident, "unexpected")] = {"reported_uuid": ",".join(sorted(rep["uuids"]))[:64]}
        # pending rows are in flight and failed rows are already reported as
        # failed installations: neither is drift until the command settles.

    # Profiles other packages installed through the command queue are expected too.
    for ident, sent_uuid in server_sent_profiles(session, device).items():
        if ident in known or is_enrollment_identifier(ident):
            continue
        known[ident] = None
        rep = reported.get(ident)
        if rep is None:
            found[(ident, "missing")] = {"expected_uuid": sent_uuid}
        elif sent_uuid not in rep["uuids"]:
            found[(ident, "outdated")] = {"expected_uuid": sent_uuid,
                                          "reported_uuid": ",".join(sorted(rep["uuids"]))[:64]}

    enrollment_seen = False
    for ident, rep in reported.items():
        if is_enrollment_identifier(ident):
            enrollment_seen = True  # the MDM profile itself is expected
            continue
        if ident not in known:
            found[(ident, "unexpected")] = {"reported_uuid": ",".join(sorted(rep["uuids"]))[:64]}
    if not enrollment_seen:
        # Without its MDM profile a device is unmanaged; compliance keys off this record.
        found[(f"{settings.org_identifier}{ENROLLMENT_SUFFIX}", "missing")] = {"is_enrollment_profile": True}

    open_rows = {(d.identifier, d.kind): d for d in session.scalars(select(ProfileDrift).where(
        ProfileDrift.device_id == device.id, ProfileDrift.resolved_at.is_(None)))}
    for key, d in open_rows.items():
        if key not in found:
            d.resolved_at = now
    result = []
    for (ident, kind), details in found.items():
        row = open_rows.get((ident, kind))
        if row is None:
            row = ProfileDrift(device_id=device.id, identifier=ident, kind=kind, detected_at=now)
            session.add(row)
            log.warning("profile drift on %s: %s %s", device.udid, kind, ident)
        row.last_seen_at = now
        row.expected_uuid = details.get("expected_uuid")
        row.reported_uuid = details.get("reported_uuid")
        row.is_enrollment_profile = bool(details.get("is_enrollment_profile"))
        result.append(row)
    session.flush()
    return result


def list_drift(session: Session, *, open_only: bool = True, device: Device | None = None,
               unit_id: int | None = None, limit: int = 500) -> list[tuple[ProfileDrift, Device]]:
    stmt = select(ProfileDrift, Device).join(Device, Device.id == ProfileDrift.device_id)
    if open_only:
        stmt = stmt.where(ProfileDrift.resolved_at.is_(None))
    if device is not None:
        stmt = stmt.where(ProfileDrift.device_id == device.id)
    if unit_id is not None:
        stmt = stmt.where(Device.unit_id == unit_id)
    return [(d, dev) for d, dev in session.execute(stmt.order_by(ProfileDrift.id.desc()).limit(limit))]


def enrollment_profile_missing(session: Session, device: Device) -> bool:
    """For compliance: the last ProfileList lacked the MDM enrollment profile."""
    return session.scalar(select(ProfileDrift.id).where(
        ProfileDrift.device_id == device.id, ProfileDrift.resolved_at.is_(None),
        ProfileDrift.is_enrollment_profile.is_(True)).limit(1)) is not None


