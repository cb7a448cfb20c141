"""Renewal of device identities, and binding a renewed identity to its device.

An MDM identity is the certificate the MDM payload's IdentityCertificateUUID points at,
inside the enrollment profile. A separate profile with just a new SCEP payload would give
the iPad a second certificate but would *not* change the identity MDM uses, so renewal
re-issues the enrollment profile itself (same PayloadIdentifier, Topic and ServerURL; iOS lets
an MDM server replace its own enrollment profile this way through InstallProfile) with a new
SCEP payload carrying a new one-time challenge. The challenge lives in a fresh
`EnrollmentToken` row whose download part is marked used at creation (the token itself is
never disclosed), so the only way to use it is SCEP.

The new certificate is bound to the device when SCEP issues it (`on_identity_issued`, on
the `identity.issued` hook), so the iPad can use it at once. The old identity is revoked as
"superseded" the moment the device first signs with the new one (mdm.checkin), and the
renewal is then completed. One renewal is in flight per device at a time.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.mobileconfig import sign_profile
from ipad_mdm.timefmt import iso

from .. import commands as command_queue
from .. import enrollment
from ..models import Command, Device, EnrollmentToken, IdentityCertificate
from .models import CertificateCheck, IdentityRenewal

log = logging.getLogger("mdm.identity")

RENEWAL_REQUESTED_BY = "identity-renewal"
# A renewal in one of these states (and younger than the enrollment token TTL) is in flight:
# no second one starts for the device.
RENEWAL_IN_FLIGHT = ("pending", "acknowledged", "issued")


class RenewalInFlight(RuntimeError):
    pass


def expiring_identities(session: Session, settings, now: dt.datetime | None = None) -> list[tuple[Device, IdentityCertificate]]:
    """Each enrolled device whose newest valid identity expires within
    identity_renew_days and has no renewal under way."""
    now = now or utcnow()
    horizon = now + dt.timedelta(days=settings.identity_renew_days)
    in_flight_since = now - dt.timedelta(hours=settings.enrollment_token_ttl_hours)
    busy = select(IdentityRenewal.device_id).where(
        IdentityRenewal.status.in_(RENEWAL_IN_FLIGHT), IdentityRenewal.created_at > in_flight_since)
    rows = session.execute(
        select(Device, IdentityCertificate)
        .join(IdentityCertificate, IdentityCertificate.device_id == Device.id)
        .where(Device.enrollment_state == "enrolled", IdentityCertificate.revoked_at.is_(None),
               Device.id.not_in(busy))
        .order_by(Device.id, IdentityCertificate.not_after.desc())
    ).all()
    result, done = [], set()
    for device, cert in rows:
        if device.id in done:
            continue
        done.add(device.id)  # the first row per device is its newest identity
        if cert.not_after <= horizon:
            result.append((device, cert))
    return result


def start_renewal(session: Session, instance, device: Device, old: IdentityCertificate, *,
                  requested_by: str = RENEWAL_REQUESTED_BY) -> Command:
    """Queue InstallProfile of a re-issued enrollment profile with a fresh SCEP challenge."""
    settings = instance.settings
    now = utcnow()
    in_flight = session.scalar(select(IdentityRenewal.id).where(
        IdentityRenewal.device_id == device.id, IdentityRenewal.status.in_(RENEWAL_IN_FLIGHT),
        IdentityRenewal.created_at > now - dt.timedelta(hours=settings.enrollment_token_ttl_hours)).limit(1))
    if in_flight is not None:
        raise RenewalInFlight(f"an identity renewal of {device.udid} is already under way")
    challenge = secrets.token_urlsafe(24)
    token = EnrollmentToken(
        # Nobody ever learns this token: the row exists to carry the challenge.
        token_sha256=enrollment.sha256_hex(secrets.token_urlsafe(32)),
        serial_number=device.serial_number,
        unit_id=device.unit_id,
        created_by=requested_by,
        expires_at=now + dt.timedelta(hours=settings.enrollment_token_ttl_hours),
        profile_fetched_at=now,  # cannot be redeemed at /mdm/enroll
        challenge_sha256=enrollment.sha256_hex(challenge),
    )
    session.add(token)
    session.flush()
    profile = enrollment.build_enrollment_profile(
        urls=enrollment.EnrollmentURLs(settings.base_url), topic=device.topic or instance.push_topic,
        ca_cert=instance.ca.certificate, challenge=challenge, token=token,
        organization=settings.organization, org_identifier=settings.org_identifier,
    )
    signed = sign_profile(profile, instance.signer_cert, instance.signer_key, [instance.ca.certificate])
    cmd = command_queue.enqueue(session, device, "InstallProfile", {"Payload": signed}, requested_by=requested_by)
    session.add(IdentityRenewal(device_id=device.id, old_identity_id=old.id, enrollment_token_id=token.id,
                                status="pending", command_uuid=cmd.uuid, created_at=now, updated_at=now))
    session.flush()
    log.info("identity renewal queued for %s (identity %s expires %s)", device.udid, old.serial, old.not_after)
    return cmd


def renew_expiring(session: Session, instance) -> list[int]:
    """Start renewals for every expiring identity; returns device ids to push."""
    ids = []
    for device, cert in expiring_identities(session, instance.settings):
        if cert.not_after <= utcnow():
            # An expired identity cannot reach /mdm/connect: only re-enrollment helps.
            log.error("identity %s of %s has expired; the device must be re-enrolled", cert.serial, device.udid)
            continue
        start_renewal(session, instance, device, cert)
        ids.append(device.id)
    return ids


def on_command_completed(session: Session, device: Device, command: Command) -> None:
    if command.request_type != "InstallProfile":
        return
    renewal = session.scalar(select(IdentityRenewal).where(IdentityRenewal.command_uuid == command.uuid))
    if renewal is None:
        return
    renewal.updated_at = utcnow()
    if command.status == "acknowledged":
        if renewal.status == "pending":
            renewal.status = "acknowledged"
    else:
        renewal.status = "failed"
        first = (command.error_chain or [{}])[0]
        renewal.error = f"{command.status}: {first.get('LocalizedDescription', '')}"[:500]
        log.warning("identity renewal of %s failed: %s", device.udid, renewal.error)


def renewal_dict(renewal) -> dict | None:
    if renewal is None:
        return None
    return {"status": renewal.status, "command_uuid": renewal.command_uuid, "error": renewal.error,
            "created_at": iso(renewal.created_at), "updated_at": iso(renewal.updated_at)}


def device_detail(session: Session, settings, device: Device, detail: dict) -> None:
    check = session.scalar(select(CertificateCheck).where(CertificateCheck.device_id == device.id))
    detail["certificates_check"] = None if check is None else {
        "checked_at": iso(check.checked_at), "ok": check.ok, "findings": check.findings}
    renewal = session.scalar(select(IdentityRenewal).where(IdentityRenewal.device_id == device.id)
                             .order_by(IdentityRenewal.id.desc()).limit(1))
    current = [c for c in device.certificates if c.revoked_at is None]
    newest = max(current, key=lambda c: c.not_after, default=None)
    detail["identity_lifecycle"] = {
        "expires_at": iso(newest.not_after) if newest else None,
        "renewal_due": bool(newest and newest.not_after <= utcnow() + dt.timedelta(days=settings.identity_renew_days)),
        "last_renewal": renewal_dict(renewal),
    }




def on_identity_issued(session: Session, identity: IdentityCertificate, token) -> None:
    """SCEP issued an identity: if its challenge came from a renewal, bind it to that device."""
    if identity.device_id is not None or token is None:
        return
    renewal = session.scalar(
        select(IdentityRenewal).where(IdentityRenewal.enrollment_token_id == token.id,
                                      IdentityRenewal.status.in_(("pending", "acknowledged")))
    )
    if renewal is None:
        return
    identity.device_id = renewal.device_id
    renewal.status = "issued"
    renewal.new_identity_id = identity.id
    renewal.updated_at = utcnow()
    session.flush()


def on_identity_in_use(session: Session, identity: IdentityCertificate) -> None:
    """The device signed with a renewed identity for the first time: its renewal is complete
    (mdm.checkin has just revoked the identity it replaces)."""
    renewal = session.scalar(select(IdentityRenewal).where(IdentityRenewal.new_identity_id == identity.id,
                                                           IdentityRenewal.status == "issued"))
    if renewal is not None:
        renewal.status = "completed"
        renewal.updated_at = utcnow()
