"""Admin operations shared by the JSON API and the CLI (mdm's public surface)."""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.hooks import Hooks
from ipad_mdm.models import Unit
from ipad_mdm.plists import loads as plist_loads
from ipad_mdm.timefmt import iso

from . import commands, enrollment
from .models import Command, Device, EnrollmentToken, IdentityCertificate
from .protocol import SECRET_KEYS



class NotFound(LookupError):
    pass


def unit_by_code(session: Session, code: str | None) -> Unit | None:
    if not code:
        return None
    unit = session.scalar(select(Unit).where(Unit.code == code))
    if unit is None:
        known = list(session.scalars(select(Unit.code).order_by(Unit.code).limit(20)))
        raise NotFound(f"unknown unit {code!r} (known: {', '.join(known) or 'none yet'}; "
                       f"add one with: ipad-mdm unit add {code} \"Unit name\")")
    return unit


def unit_code_of(session: Session, unit_id: int | None) -> str | None:
    unit = session.get(Unit, unit_id) if unit_id is not None else None
    return unit.code if unit else None


def create_enrollment(session: Session, settings, *, serial_number: str | None = None,
                      unit_code: str | None = None, created_by: str = "") -> dict:
    unit = unit_by_code(session, unit_code)
    plain, row = enrollment.create_token(
        session, ttl_hours=settings.enrollment_token_ttl_hours, serial_number=serial_number,
        unit_id=unit.id if unit else None, created_by=created_by,
    )
    return {**_token_dict(settings, plain, row), "unit": unit.code if unit else None}


def signed_enrollment_profile(session: Session, inst, plain_token: str | None) -> tuple[bytes, EnrollmentToken]:
    """Redeem an enrollment token for the signed enrollment profile (CA, SCEP, MDM payloads): the
    OTA download (/mdm/enroll) and Automated Device Enrollment both end here. Raises
    enrollment.EnrollmentRefused, PayloadError."""
    from ipad_mdm.mobileconfig import sign_profile

    from . import pushcert  # the certificate in use now: a renewal installed by another process counts

    token, challenge = enrollment.redeem_token(session, plain_token)
    profile = enrollment.build_enrollment_profile(
        urls=enrollment.EnrollmentURLs(inst.settings.base_url), topic=pushcert.current(inst).topic,
        ca_cert=inst.ca.certificate,
        challenge=challenge, token=token, organization=inst.settings.organization,
        org_identifier=inst.settings.org_identifier)
    return sign_profile(profile, inst.signer_cert, inst.signer_key, [inst.ca.certificate]), token


def _token_dict(settings, plain: str, row) -> dict:
    """What the caller of a new token sees, once: the token and its URL."""
    return {"id": row.id, "token": plain, "url": enrollment.EnrollmentURLs(settings.base_url).enroll(plain),
            "expires_at": iso(row.expires_at), "serial_number": row.serial_number}


def token_state(row: EnrollmentToken, now=None) -> str:
    """usable | profile_fetched (the iPad is enrolling) | used | expired | revoked."""
    now = now or utcnow()
    if row.revoked_at is not None:
        return "revoked"
    if row.challenge_used_at is not None:
        return "used"
    if row.expires_at <= now:
        return "expired"
    return "profile_fetched" if row.profile_fetched_at is not None else "usable"


def list_enrollment_tokens(session: Session, *, include_spent: bool = False, unit_id: int | None = None,
                           limit: int = 100, offset: int = 0) -> tuple[int, list[dict]]:
    """Enrollment tokens, newest first; never the token or its URL (shown once, at creation).
    Without include_spent: those an iPad could still use."""
    stmt = select(EnrollmentToken)
    if not include_spent:
        stmt = stmt.where(EnrollmentToken.revoked_at.is_(None), EnrollmentToken.challenge_used_at.is_(None),
                          EnrollmentToken.expires_at > utcnow())
    if unit_id is not None:
        stmt = stmt.where(EnrollmentToken.unit_id == unit_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(EnrollmentToken.id.desc()).limit(limit).offset(offset)))
    units = {u.id: u.code for u in session.scalars(select(Unit).where(Unit.id.in_({r.unit_id for r in rows})))}
    now = utcnow()
    return total, [{"id": r.id, "state": token_state(r, now), "serial_number": r.serial_number,
                    "unit": units.get(r.unit_id), "created_by": r.created_by, "created_at": iso(r.created_at),
                    "expires_at": iso(r.expires_at), "revoked_at": iso(r.revoked_at),
                    "reenroll": r.reenroll_device_id is not None} for r in rows]


def revoke_enrollment_token(session: Session, token_id: int, *, unit_id: int | None = None) -> dict:
    """An unused token stops working at once (a lost QR code, a printed URL). Revoking a token an
    iPad has already used changes nothing: the iPad's identity is revoked by retiring it."""
    row = session.get(EnrollmentToken, token_id)
    if row is None or (unit_id is not None and row.unit_id != unit_id):
        raise NotFound(f"unknown enrollment token {token_id}")
    state = token_state(row)
    if state == "used":
        raise ValueError(f"enrollment token {token_id} has been used by an iPad; retire the iPad instead")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return {"id": row.id, "state": "revoked", "revoked_at": iso(row.revoked_at)}


def create_reenrollment(session: Session, settings, udid: str, *, created_by: str = "") -> dict:
    """An explicit re-enrollment of an erased or replaced iPad: a one-time token that only this
    device (its UDID, its serial) may use, and whose Authenticate takes over the UDID and revokes
    the old identity. Earlier unused re-enrollment tokens of the device are revoked."""
    device = get_device(session, udid)
    session.execute(update(EnrollmentToken).where(
        EnrollmentToken.reenroll_device_id == device.id, EnrollmentToken.challenge_used_at.is_(None),
        EnrollmentToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    plain, row = enrollment.create_token(
        session, ttl_hours=settings.enrollment_token_ttl_hours, serial_number=device.serial_number,
        unit_id=device.unit_id, created_by=created_by, reenroll_device_id=device.id,
    )
    return {**_token_dict(settings, plain, row), "udid": device.udid}


def get_device(session: Session, udid: str) -> Device:
    device = session.scalar(select(Device).where(Device.udid == udid))
    if device is None:
        raise NotFound(f"unknown device {udid}")
    return device


def device_summary(device: Device) -> dict:
    return {
        "udid": device.udid,
        "serial_number": device.serial_number,
        "device_name": device.device_name,
        "model": device.model,
        "model_name": device.model_name,
        "os_version": device.os_version,
        "enrollment_state": device.enrollment_state,
        "unit_id": device.unit_id,
        "lost_mode_enabled": device.lost_mode_enabled,
        "is_supervised": device.is_supervised,
        "enrolled_at": iso(device.enrolled_at),
        "last_seen_at": iso(device.last_seen_at),
    }


def list_devices(session: Session, *, limit: int = 100, offset: int = 0, unit_id: int | None = None) -> tuple[int, list[Device]]:
    stmt = select(Device)
    count = select(func.count(Device.id))
    if unit_id is not None:
        stmt = stmt.where(Device.unit_id == unit_id)
        count = count.where(Device.unit_id == unit_id)
    total = session.scalar(count)
    rows = list(session.scalars(stmt.order_by(Device.id).limit(limit).offset(offset)))
    return total, rows


def push_state(device: Device) -> str:
    """How waking this iPad stands, for people: no_token (it has not sent a TokenUpdate),
    off_demo (demo mode: no Apple push certificate), certificate_refused (APNs refuses the push
    certificate, or it expired: see the push certificate page), failing, waiting, ok."""
    from .push import PUSH_BLOCKED, PUSHES_OFF

    if not device.push_token:
        return "no_token"
    if device.last_push_error == PUSHES_OFF:
        return "off_demo"
    if (device.last_push_error or "").startswith(PUSH_BLOCKED):
        return "certificate_refused"
    if device.push_failures:
        return "failing"
    return "waiting" if device.push_pending else "ok"


def device_detail(session: Session, hooks: Hooks, device: Device) -> dict:
    """Inventory, certificates, push state and whatever other packages contribute (verdict)."""
    detail = device_summary(device)
    detail.update(
        {
            "build_version": device.build_version,
            "product_name": device.product_name,
            "imei": device.imei,
            "push": {
                "has_token": device.push_token is not None,
                "pending": device.push_pending,
                "last_push_at": iso(device.last_push_at),
                "last_error": device.last_push_error,
                "failures": device.push_failures,
                "state": push_state(device),
            },
            "inventory": {
                "DeviceInformation": device.device_information,
                "DeviceInformationAt": iso(device.device_information_at),
                "SecurityInfo": device.security_info,
                "SecurityInfoAt": iso(device.security_info_at),
                "ProfileList": device.profile_list,
                "ProfileListAt": iso(device.profile_list_at),
                "CertificateList": device.certificate_list,
                "CertificateListAt": iso(device.certificate_list_at),
                "InstalledApplicationList": device.installed_applications,
                "InstalledApplicationListAt": iso(device.installed_applications_at),
            },
            "certificates": [identity_summary(c) for c in device.certificates],
            "verdict": None,
        }
    )
    hooks.emit("device.detail", session=session, device=device, detail=detail)
    return detail


def identity_summary(cert: IdentityCertificate) -> dict:
    return {
        "serial": cert.serial,
        "subject": cert.subject,
        "sha256": cert.sha256_fingerprint,
        "not_before": iso(cert.not_before),
        "not_after": iso(cert.not_after),
        "revoked_at": iso(cert.revoked_at),
        "revocation_reason": cert.revocation_reason,
    }


def send_command(session: Session, udid: str, request_type: str, params: dict | None = None, *, requested_by: str = "") -> Command:
    device = get_device(session, udid)
    return commands.enqueue(session, device, request_type, params, requested_by=requested_by)


def command_detail(session: Session, cmd: Command) -> dict:
    device = session.get(Device, cmd.device_id)
    shown = plist_loads(cmd.command_plist)["Command"]
    for secret_key in SECRET_KEYS.get(cmd.request_type, ()):
        value = shown.get(secret_key)
        if isinstance(value, bytes) and value:
            shown[secret_key] = f"<{len(value)} bytes>"
        elif value:
            shown[secret_key] = "***"
    for key, value in list(shown.items()):
        if isinstance(value, bytes):
            shown[key] = f"<{len(value)} bytes>"
    return {
        "command_uuid": cmd.uuid,
        "udid": device.udid if device else None,
        "request_type": cmd.request_type,
        "command": shown,
        "status": cmd.status,
        "requested_by": cmd.requested_by,
        "created_at": iso(cmd.created_at),
        "sent_at": iso(cmd.sent_at),
        "completed_at": iso(cmd.completed_at),
        "attempts": cmd.attempts,
        "result": cmd.result,
        "error_chain": cmd.error_chain,
        "history": command_history(cmd),
    }


def command_history(cmd: Command) -> list[dict]:
    """What happened to a command, queueing first. Its queueing is the row itself (created_at,
    requested_by); commands queued before that was so also have a "queued" event row, shown once."""
    events = [{"status": e.status, "at": iso(e.at), "detail": e.detail} for e in cmd.events]
    if not events or events[0]["status"] != "queued":
        events.insert(0, {"status": "queued", "at": iso(cmd.created_at), "detail": cmd.requested_by or None})
    return events


def get_command(session: Session, command_uuid: str) -> Command:
    cmd = commands.find(session, command_uuid)
    if cmd is None:
        raise NotFound(f"unknown command {command_uuid}")
    return cmd


def device_commands(session: Session, device: Device, limit: int = 100) -> list[Command]:
    return list(session.scalars(select(Command).where(Command.device_id == device.id).order_by(Command.id.desc()).limit(limit)))
