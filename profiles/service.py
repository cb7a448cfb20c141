"""Configuration profiles: versions, assignment, rollout, and drift reconciliation.

Everything here takes an open SQLAlchemy session and never commits: callers
(the JSON API, hook handlers, the CLI) own the unit of work, so a rollout and
the commands it queues are stored atomically. Functions that queue commands
return the affected device ids; the caller pushes them after commit.

Server belief vs. device reality:
  * `ProfileInstallation` is what the server believes (updated when the
    InstallProfile / RemoveProfile command is answered);
  * `Device.profile_list` is what the device last reported;
  * `ProfileDrift` records the differences, opened and resolved by
    `reconcile` on every ProfileList result.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import uuid as uuidlib
from dataclasses import dataclass

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit
from ipad_mdm.plists import to_json
from mdm import commands as command_queue
from mdm import Command, Device

from ipad_mdm import mobileconfig as pl
from .models import (
    ConfigurationProfile, ProfileAssignment, ProfileDrift, ProfileInstallation, ProfileVersion,
)
from ipad_mdm.mobileconfig import sign_profile

log = logging.getLogger(__name__)

ENROLLMENT_SUFFIX = ".enroll"
# Keys whose values are secrets: stored (the device needs them) but never shown by the API.
SECRET_KEYS = frozenset({
    "Password", "Challenge", "UserPassword", "SharedSecret", "AuthPassword", "PPK", "WgQuickConfig",
})
MAX_PAYLOADS = 50
MAX_DEPTH = 32  # same bound as ipad_mdm.plists for device input


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    """The request contradicts stored state (duplicate identifier, ...): HTTP 409."""


class InvalidRequest(ValueError):
    """A malformed request (not a payload rule): HTTP 400."""


class ProfileIntegrityError(RuntimeError):
    """A stored version no longer rebuilds to the bytes that were reviewed."""




# --------------------------------------------------------------------------
# JSON <-> plist values
# --------------------------------------------------------------------------


def json_to_plist(value, path: str = "", depth: int = 0):
    """JSON payload values -> plist values: {"$data": base64} becomes bytes."""
    if depth > MAX_DEPTH:
        raise pl.PayloadError(path, f"{path} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if set(value) == {"$data"}:
            raw = value["$data"]
            try:
                if not isinstance(raw, str):
                    raise ValueError
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise pl.PayloadError(path or "$data", f"{path or 'value'} is not valid base64 in {{\"$data\": ...}}") from None
        return {k: json_to_plist(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [json_to_plist(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


def redact(value):
    """A copy of stored payload JSON with secret values replaced, for display."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k] = "***" if k in SECRET_KEYS else redact(v)
        if value.get("PayloadType") == "com.apple.security.pkcs12" and "PayloadContent" in out:
            out["PayloadContent"] = "***"  # a private key
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Profiles and versions
# --------------------------------------------------------------------------


def is_enrollment_identifier(identifier: str | None) -> bool:
    return bool(identifier) and identifier.endswith(ENROLLMENT_SUFFIX)


def _prepare_payloads(raw_payloads) -> list[pl.Payload]:
    if not isinstance(raw_payloads, list) or not raw_payloads:
        raise InvalidRequest("payloads must be a non-empty array of payload objects")
    if len(raw_payloads) > MAX_PAYLOADS:
        raise InvalidRequest(f"at most {MAX_PAYLOADS} payloads per profile")
    result = []
    for index, raw in enumerate(raw_payloads):
        where = f"payloads[{index}]"
        if not isinstance(raw, dict):
            raise pl.PayloadError(where, f"{where} must be an object")
        d = json_to_plist(raw, where)
        # Conveniences for API clients; the validator still checks what is given.
        d.setdefault("PayloadVersion", 1)
        d.setdefault("PayloadUUID", str(uuidlib.uuid4()).upper())
        try:
            result.append(pl.validate_payload_dict(d))
        except pl.PayloadError as exc:
            # Keep the validator's wording (it names the key) and say which payload.
            raise pl.PayloadError(f"{where}.{exc.key}", f"{where}: {exc.message}") from None
    return result


def _profile_object(identifier: str, version: ProfileVersion, payload_objs) -> pl.Profile:
    return pl.Profile(
        identifier=identifier,
        display_name=version.display_name,
        organization=version.organization,
        description=version.description,
        payloads=list(payload_objs),
        uuid=version.profile_uuid,
        removal_disallowed=version.removal_disallowed,
    )


def _new_version(session: Session, profile: ConfigurationProfile, number: int, *, raw_payloads,
                 display_name: str, description: str | None, organization: str,
                 removal_disallowed: bool, created_by: str) -> ProfileVersion:
    objs = _prepare_payloads(raw_payloads)
    version = ProfileVersion(
        version=number, profile_uuid=str(uuidlib.uuid4()).upper(), display_name=display_name,
        description=description, organization=organization, removal_disallowed=removal_disallowed,
        created_by=created_by, created_at=utcnow(),
    )
    # Whole-profile rules (unique payload identifiers/UUIDs, certificate references)
    # are checked here, so a bad version is refused before it is stored.
    plist = _profile_object(profile.identifier, version, objs).to_plist_bytes()
    version.payloads = [to_json(o.to_dict()) for o in objs]
    version.plist_sha256 = hashlib.sha256(plist).hexdigest()
    profile.versions.append(version)
    profile.current_version = number
    profile.display_name = display_name
    profile.description = description
    profile.updated_at = utcnow()
    session.flush()
    return version


def _check_text(name: str, value, *, required: bool, max_len: int = 255) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidRequest(f"{name} must be a non-empty string of at most {max_len} characters")
    return value


def create_profile(session: Session, settings, *, identifier, display_name, payloads, description=None,
                   removal_disallowed: bool = False, created_by: str = "") -> ConfigurationProfile:
    identifier = _check_text("identifier", identifier, required=True)
    display_name = _check_text("display_name", display_name, required=True)
    description = _check_text("description", description, required=False, max_len=4000)
    if not isinstance(removal_disallowed, bool):
        raise InvalidRequest("removal_disallowed must be a boolean")
    if is_enrollment_identifier(identifier):
        # The device matches profiles by identifier: ours would replace the MDM profile.
        raise InvalidRequest(f"identifier must not end with {ENROLLMENT_SUFFIX!r} (reserved for the enrollment profile)")
    if session.scalar(select(ConfigurationProfile.id).where(ConfigurationProfile.identifier == identifier)):
        raise Conflict(f"a profile with identifier {identifier!r} already exists")
    profile = ConfigurationProfile(identifier=identifier, display_name=display_name, description=description,
                                   current_version=0, created_by=created_by, created_at=utcnow(), updated_at=utcnow())
    session.add(profile)
    _new_version(session, profile, 1, raw_payloads=payloads, display_name=display_name, description=description,
                 organization=settings.organization, removal_disallowed=removal_disallowed, created_by=created_by)
    log.info("profile %s created by %s", identifier, created_by)
    return profile


def new_version(session: Session, settings, profile: ConfigurationProfile, *, payloads, display_name=None,
                description=None, removal_disallowed=None, created_by: str = "") -> ProfileVersion:
    """A new version becomes current (what new enrollments get); install it to roll it out."""
    latest = profile.versions[-1]
    display_name = _check_text("display_name", display_name, required=False) or latest.display_name
    description = _check_text("description", description, required=False, max_len=4000) if description is not None else latest.description
    if removal_disallowed is None:
        removal_disallowed = latest.removal_disallowed
    elif not isinstance(removal_disallowed, bool):
        raise InvalidRequest("removal_disallowed must be a boolean")
    number = max(v.version for v in profile.versions) + 1
    version = _new_version(session, profile, number, raw_payloads=payloads, display_name=display_name,
                           description=description, organization=settings.organization,
                           removal_disallowed=removal_disallowed, created_by=created_by)
    log.info("profile %s version %d created by %s", profile.identifier, number, created_by)
    return version


def get_profile(session: Session, identifier: str) -> ConfigurationProfile:
    profile = session.scalar(select(ConfigurationProfile).where(ConfigurationProfile.identifier == identifier))
    if profile is None:
        raise NotFound(f"unknown profile {identifier!r}")
    return profile


def get_version(profile: ConfigurationProfile, number: int | None = None) -> ProfileVersion:
    number = profile.current_version if number is None else number
    for v in profile.versions:
        if v.version == number:
            return v
    raise NotFound(f"profile {profile.identifier!r} has no version {number}")


def list_profiles(session: Session) -> list[ConfigurationProfile]:
    return list(session.scalars(select(ConfigurationProfile).order_by(ConfigurationProfile.identifier)))


def build_plist(profile: ConfigurationProfile, version: ProfileVersion) -> bytes:
    """Rebuild the unsigned plist of a version, refusing if its bytes changed.

    The stored payload dicts go through today's validator and serializer; if
    that no longer yields the reviewed bytes (a payloads.py change, a hand-edited
    row) we refuse rather than sign something nobody approved: make a new version.
    """
    objs = [pl.validate_payload_dict(json_to_plist(p)) for p in version.payloads]
    plist = _profile_object(profile.identifier, version, objs).to_plist_bytes()
    if hashlib.sha256(plist).hexdigest() != version.plist_sha256:
        raise ProfileIntegrityError(
            f"profile {profile.identifier!r} version {version.version} no longer rebuilds to its stored "
            "sha256; create a new version"
        )
    return plist


def sign_version(instance, profile: ConfigurationProfile, version: ProfileVersion) -> bytes:
    # The CA certificate rides along so the device can show the signer chain as verified.
    return sign_profile(build_plist(profile, version), instance.signer_cert, instance.signer_key,
                        [instance.ca.certificate])


# --------------------------------------------------------------------------
# Assignment
# --------------------------------------------------------------------------


def _device_by_udid(session: Session, udid) -> Device:
    if not isinstance(udid, str):
        raise InvalidRequest("device UDIDs must be strings")
    device = session.scalar(select(Device).where(Device.udid == udid))
    if device is None:
        raise NotFound(f"unknown device {udid}")
    return device


def _unit_by_code(session: Session, code) -> Unit:
    if not isinstance(code, str):
        raise InvalidRequest("unit codes must be strings")
    unit = session.scalar(select(Unit).where(Unit.code == code))
    if unit is None:
        raise NotFound(f"unknown unit {code!r}")
    return unit


def assign(session: Session, profile: ConfigurationProfile, *, devices=(), units=(), all_devices: bool = False,
           created_by: str = "") -> list[ProfileAssignment]:
    """Add targets (idempotent). Returns the assignments that were created."""
    if not isinstance(devices, (list, tuple)) or not isinstance(units, (list, tuple)) or not isinstance(all_devices, bool):
        raise InvalidRequest("devices and units must be arrays, all must be a boolean")
    if not devices and not units and not all_devices:
        raise InvalidRequest("name at least one target: devices, units or all")
    wanted: list[tuple[str, int | None, int | None]] = []
    wanted += [("device", _device_by_udid(session, u).id, None) for u in devices]
    wanted += [("unit", None, _unit_by_code(session, c).id) for c in units]
    if all_devices:
        wanted.append(("all", None, None))
    have = {(a.target_type, a.device_id, a.unit_id) for a in profile.assignments}
    created = []
    for target_type, device_id, unit_id in dict.fromkeys(wanted):
        if (target_type, device_id, unit_id) in have:
            continue
        a = ProfileAssignment(target_type=target_type, device_id=device_id, unit_id=unit_id,
                              created_by=created_by, created_at=utcnow())
        profile.assignments.append(a)
        created.append(a)
    session.flush()
    return created


def target_devices(session: Session, profile: ConfigurationProfile) -> list[Device]:
    """Enrolled devices the assignments name (devices still enrolling get the
    profile from the devices.enrolled hook)."""
    conds = []
    device_ids = [a.device_id for a in profile.assignments if a.target_type == "device"]
    unit_ids = [a.unit_id for a in profile.assignments if a.target_type == "unit"]
    if any(a.target_type == "all" for a in profile.assignments):
        conds.append(True)
    if device_ids:
        conds.append(Device.id.in_(device_ids))
    if unit_ids:
        conds.append(Device.unit_id.in_(unit_ids))
    if not conds:
        return []
    stmt = select(Device).where(Device.enrollment_state == "enrolled")
    if True not in conds:
        stmt = stmt.where(or_(*conds))
    return list(session.scalars(stmt.order_by(Device.id)))


# --------------------------------------------------------------------------
# Install / remove
# --------------------------------------------------------------------------


@dataclass
class Queued:
    device: Device
    command: Command

    def as_dict(self) -> dict:
        return {"udid": self.device.udid, "command_uuid": self.command.uuid, "request_type": self.command.request_type}


def _installation(session: Session, device_id: int, profile_id: int) -> ProfileInstallation | None:
    return session.scalar(select(ProfileInstallation).where(
        ProfileInstallation.device_id == device_id, ProfileInstallation.profile_id == profile_id))


def _has_open_drift(session: Session, device_id: int, identifier: str) -> bool:
    return session.scalar(select(ProfileDrift.id).where(
        ProfileDrift.device_id == device_id, ProfileDrift.identifier == identifier,
        ProfileDrift.resolved_at.is_(None)).limit(1)) is not None


def _install_on(session: Session, device: Device, profile: ConfigurationProfile, version: ProfileVersion,
                signed: bytes, requested_by: str, *, force: bool) -> Queued | None:
    row = _installation(session, device.id, profile.id)
    if (not force and row is not None and row.action == "install" and row.version_id == version.id
            and row.status in ("pending", "installed") and not _has_open_drift(session, device.id, profile.identifier)):
        return None  # already there (or on its way) and the device agrees
    cmd = command_queue.enqueue(session, device, "InstallProfile", {"Payload": signed}, requested_by=requested_by)
    now = utcnow()
    if row is None:
        row = ProfileInstallation(device_id=device.id, profile_id=profile.id, created_at=now)
        session.add(row)
    row.version_id = version.id
    row.action = "install"
    row.status = "pending"
    row.command_uuid = cmd.uuid
    row.requested_by = requested_by
    row.error = None
    row.updated_at = now
    session.flush()
    return Queued(device, cmd)


def install(session: Session, instance, profile: ConfigurationProfile, *, version: int | None = None,
            requested_by: str = "", force: bool = False) -> list[Queued]:
    """Queue InstallProfile of `version` (default: current) on every target device.

    Installing an older version is a rollback: it becomes the current version,
    so devices enrolling later get the same one. Devices that already have the
    version (and show no drift) are skipped unless `force`.
    """
    ver = get_version(profile, version)
    if profile.current_version != ver.version:
        profile.current_version = ver.version
        profile.updated_at = utcnow()
    devices = target_devices(session, profile)
    if not devices:
        return []
    signed = sign_version(instance, profile, ver)  # one signature for the whole rollout
    queued = []
    for device in devices:
        q = _install_on(session, device, profile, ver, signed, requested_by, force=force)
        if q is not None:
            queued.append(q)
    log.info("profile %s v%d: InstallProfile queued for %d device(s) by %s",
             profile.identifier, ver.version, len(queued), requested_by)
    return queued


def remove(session: Session, profile: ConfigurationProfile, *, devices=None, requested_by: str = "") -> list[Queued]:
    """Queue RemoveProfile where the profile is (or may be) installed.

    Without `devices` the profile is removed everywhere and all its assignments
    are dropped, so it does not come back with the next enrollment. With
    `devices` only those devices' own assignments are dropped (a unit or "all"
    assignment would still cover them: unassign those separately).
    """
    if devices is not None and not isinstance(devices, (list, tuple)):
        raise InvalidRequest("devices must be an array of UDIDs")
    stmt = select(ProfileInstallation).where(ProfileInstallation.profile_id == profile.id)
    if devices is not None:
        ids = [_device_by_udid(session, u).id for u in devices]
        stmt = stmt.where(ProfileInstallation.device_id.in_(ids))
        session.execute(delete(ProfileAssignment).where(
            ProfileAssignment.profile_id == profile.id, ProfileAssignment.device_id.in_(ids)))
    else:
        session.execute(delete(ProfileAssignment).where(ProfileAssignment.profile_id == profile.id))
    session.expire(profile, ["assignments"])
    queued = []
    now = utcnow()
    for row in session.scalars(stmt.order_by(ProfileInstallation.id)):
        if row.status == "removed" or (row.action == "remove" and row.status == "pending"):
            continue
        device = session.get(Device, row.device_id)
        row.action = "remove"
        row.requested_by = requested_by
        row.updated_at = now
        row.error = None
        if device.enrollment_state in ("checked_out", "retired"):
            # iOS removes managed profiles together with the MDM profile.
            row.status = "removed"
            row.removed_at = now
            continue
        cmd = command_queue.enqueue(session, device, "RemoveProfile", {"Identifier": profile.identifier},
                                    requested_by=requested_by)
        row.status = "pending"
        row.command_uuid = cmd.uuid
        queued.append(Queued(device, cmd))
    session.flush()
    log.info("profile %s: RemoveProfile queued for %d device(s) by %s", profile.identifier, len(queued), requested_by)
    return queued


def installations(session: Session, *, profile: ConfigurationProfile | None = None,
                  device: Device | None = None) -> list[ProfileInstallation]:
    stmt = select(ProfileInstallation)
    if profile is not None:
        stmt = stmt.where(ProfileInstallation.profile_id == profile.id)
    if device is not None:
        stmt = stmt.where(ProfileInstallation.device_id == device.id)
    return list(session.scalars(stmt.order_by(ProfileInstallation.id)))


def _ensure_profile_list_queued(session: Session, device: Device) -> None:
    """Ask for a ProfileList after a change, so reconciliation confirms it.
    One queued request is enough however many installs complete."""
    already = session.scalar(select(Command.id).where(
        Command.device_id == device.id, Command.request_type == "ProfileList",
        Command.status.in_(("queued", "notnow"))).limit(1))
    if already is None:
        command_queue.enqueue(session, device, "ProfileList", requested_by="profiles.verify")


def on_command_completed(session: Session, device: Device, command: Command) -> None:
    """Hook: an InstallProfile / RemoveProfile answer updates the installation."""
    if command.request_type not in ("InstallProfile", "RemoveProfile"):
        return
    row = session.scalar(select(ProfileInstallation).where(
        ProfileInstallation.device_id == device.id, ProfileInstallation.command_uuid == command.uuid))
    if row is None:
        return  # not one of ours (e.g. the identity renewal), or superseded by a newer command
    now = utcnow()
    row.updated_at = now
    if command.status == "acknowledged":
        row.status = "installed" if row.action == "install" else "removed"
        row.error = None
        if row.action == "install":
            row.installed_at = now
        else:
            row.removed_at = now
    else:
        row.status = "failed"
        first = (command.error_chain or [{}])[0]
        row.error = (f"{command.status}: {first.get('ErrorDomain', '')} {first.get('ErrorCode', '')} "
                     f"{first.get('LocalizedDescription', '')}").strip()[:500]
        log.warning("%s of %s on %s failed: %s", command.request_type, row.profile.identifier, device.udid, row.error)
    if device.enrollment_state == "enrolled":
        _ensure_profile_list_queued(session, device)


def on_devices_enrolled(session: Session, instance, devices: list[Device]) -> None:
    """Hook (devices.enrolled): each new iPad gets every profile assigned to it. Which those are comes
    from one query for the provisioning pass, and each profile is signed once for all its iPads."""
    units = {d.unit_id for d in devices if d.unit_id is not None}
    conds = [ProfileAssignment.target_type == "all", ProfileAssignment.device_id.in_([d.id for d in devices])]
    if units:
        conds.append(ProfileAssignment.unit_id.in_(units))
    assigned = session.execute(select(ProfileAssignment.target_type, ProfileAssignment.device_id,
                                      ProfileAssignment.unit_id, ConfigurationProfile)
                               .join(ConfigurationProfile, ProfileAssignment.profile_id == ConfigurationProfile.id)
                               .where(or_(*conds))).all()
    if not assigned:
        return
    signed: dict[int, tuple | None] = {}
    for device in devices:
        mine = {p.id: p for kind, device_id, unit_id, p in assigned
                if kind == "all" or device_id == device.id or (unit_id is not None and unit_id == device.unit_id)}
        for profile in (mine[k] for k in sorted(mine)):
            if profile.id not in signed:
                ver = get_version(profile)
                try:
                    signed[profile.id] = (ver, sign_version(instance, profile, ver))
                except ProfileIntegrityError:
                    # Do not fail the enrollment (the device must stay manageable); log it loudly.
                    log.exception("profile %s not installed on new devices", profile.identifier)
                    signed[profile.id] = None
            if signed[profile.id] is not None:
                _install_on(session, device, profile, *signed[profile.id], "enrollment", force=False)


def on_device_gone(session: Session, device: Device) -> None:
    """Hook (check-out / retirement): managed profiles leave with the MDM profile."""
    now = utcnow()
    for row in installations(session, device=device):
        if row.status != "removed":
            row.status = "removed"
            row.removed_at = now
            row.updated_at = now
            row.error = f"device {device.enrollment_state}"
