"""Device identity certificate lifecycle: renewal, revocation + CRL, CertificateList check.

Renewal
-------
An MDM identity is the certificate the MDM payload's IdentityCertificateUUID
points at, inside the enrollment profile. A separate profile with just a new
SCEP payload would give the iPad a second certificate but would *not* change
the identity MDM uses, so renewal re-issues the enrollment profile itself
(same PayloadIdentifier, Topic and ServerURL; iOS lets an MDM server replace
its own enrollment profile this way through InstallProfile) with a new SCEP
payload carrying a new one-time challenge. The challenge lives in a fresh
`EnrollmentToken` row whose download part is marked used at creation (the
token itself is never disclosed), so the only way to use it is SCEP.

The new certificate must be bound to the device before the iPad uses it,
otherwise /mdm/connect refuses it ("not bound to a device"). The SCEP
endpoint emits `identity.issued`; `on_identity_issued` binds a certificate
issued for a renewal token to the renewing device. The old identity is revoked as "superseded" once
a CertificateList shows the device holds the new one and no longer the old.

Revocation
----------
`revoke_identity` marks the row; /mdm/connect already refuses revoked
identities. `current_crl` serves a CRL built from every revoked, unexpired
identity, re-signed only when that set changes (whoever revoked it: this
module, CheckOut, retirement) or half its validity has passed; the CRLNumber
is stored and only grows.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.plists import json_data

from . import commands as command_queue
from . import enrollment
from .models import Command, Device, EnrollmentToken, IdentityCertificate

log = logging.getLogger(__name__)

# RFC 5280 5.3.1 reason names (stored as given; the CRL lists serial + date).
REVOCATION_REASONS = (
    "unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation",
    "certificateHold", "privilegeWithdrawn",
)
CRL_VALIDITY_HOURS = 24
RENEWAL_REQUESTED_BY = "identity-renewal"
# A renewal in one of these states (and younger than the enrollment token TTL) is in flight:
# no second one starts for the device.
RENEWAL_IN_FLIGHT = ("pending", "acknowledged", "issued")


class RenewalInFlight(RuntimeError):
    pass
_ISO = lambda v: v.isoformat() if v is not None else None  # noqa: E731


def _renewal_model():
    # The lifecycle tables live with the profiles package (its migration).
    from profiles.models import IdentityRenewal

    return IdentityRenewal


# --------------------------------------------------------------------------
# Revocation and CRL
# --------------------------------------------------------------------------


class RevocationError(ValueError):
    pass


def revoke_identity(session: Session, cert: IdentityCertificate, reason: str = "unspecified") -> bool:
    """Revoke a device identity. Returns False if it was already revoked (the
    first revocation's date and reason stand: they are what relying parties saw)."""
    if reason not in REVOCATION_REASONS:
        raise RevocationError(f"reason must be one of {', '.join(REVOCATION_REASONS)}")
    if cert.revoked_at is not None:
        return False
    cert.revoked_at = utcnow()
    cert.revocation_reason = reason
    session.flush()
    log.warning("identity certificate %s (device #%s) revoked: %s", cert.serial, cert.device_id, reason)
    return True


def _revoked_entries(session: Session, now: dt.datetime) -> list[tuple[int, dt.datetime]]:
    # Expired certificates are left out (RFC 5280 allows it): no verifier accepts
    # them anyway, and the CRL would otherwise grow forever.
    rows = session.execute(
        select(IdentityCertificate.serial, IdentityCertificate.revoked_at)
        .where(IdentityCertificate.revoked_at.is_not(None), IdentityCertificate.not_after > now)
    ).all()
    # Second precision: that is what the CRL encodes, and it keeps the digest stable.
    return sorted((int(serial, 16), revoked_at.replace(microsecond=0)) for serial, revoked_at in rows)


def _digest(entries) -> str:
    h = hashlib.sha256()
    for serial, when in entries:
        h.update(f"{serial:x} {when.isoformat()}\n".encode())
    return h.hexdigest()


def current_crl(session: Session, ca, *, validity_hours: int = CRL_VALIDITY_HOURS) -> bytes:
    """The DER CRL, re-signed only when needed (signing may be a PKCS#11 round trip)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from profiles.models import CrlState

    now = utcnow()
    entries = _revoked_entries(session, now)
    digest = _digest(entries)
    state = session.get(CrlState, 1)
    if (state is not None and state.der and state.content_sha256 == digest and state.next_update is not None
            and state.next_update - now > dt.timedelta(hours=validity_hours / 2)):
        return state.der
    number = (state.number if state else 0) + 1
    crl = ca.build_crl(entries, next_update_hours=validity_hours, number=number)
    der = crl.public_bytes(Encoding.DER)
    values = dict(number=number, content_sha256=digest, der=der, this_update=crl.last_update_utc,
                  next_update=crl.next_update_utc)
    if state is None:
        try:
            with session.begin_nested():
                session.add(CrlState(id=1, **values))
        except IntegrityError:
            return _stored_crl(session)
        return der
    # Compare-and-set on the number: two workers rebuilding at once must not
    # publish two different CRLs under the same CRLNumber.
    claimed = session.execute(
        update(CrlState).where(CrlState.id == 1, CrlState.number == state.number).values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        return _stored_crl(session)
    session.expire(state)
    log.info("CRL #%d published with %d revoked identities", number, len(entries))
    return der


def _stored_crl(session: Session) -> bytes:
    from profiles.models import CrlState

    session.expire_all()
    return session.get(CrlState, 1).der


# --------------------------------------------------------------------------
# CertificateList check
# --------------------------------------------------------------------------


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def check_certificates(session: Session, ca, device: Device) -> dict:
    """Compare the device's CertificateList with the identities issued for it.

    Findings: missing_identity (no current identity of ours on the device),
    foreign_identity (an identity we did not issue to this device, e.g. a
    copied one), expired_identity, revoked_identity, unreadable_certificate.
    Certificates that are not identities and not from our CA (Wi-Fi roots a
    profile installed, ...) are counted but not flagged.
    """
    from profiles.models import CertificateCheck

    now = utcnow()
    issued = list(session.scalars(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id)))
    by_fp = {c.sha256_fingerprint: c for c in issued}
    ca_fp = _fingerprint(ca.certificate)
    findings: list[dict] = []
    seen_current: list[IdentityCertificate] = []
    seen_fps: set[str] = set()
    others = 0
    entries = device.certificate_list if isinstance(device.certificate_list, list) else []
    for index, entry in enumerate(entries):
        entry = entry if isinstance(entry, dict) else {}
        name = entry.get("CommonName")
        der = json_data(entry.get("Data"))
        try:
            cert = x509.load_der_x509_certificate(der) if der else None
        except ValueError:
            cert = None
        if cert is None:
            findings.append({"kind": "unreadable_certificate", "index": index, "common_name": name})
            continue
        fp = _fingerprint(cert)
        seen_fps.add(fp)
        if fp == ca_fp:
            continue  # our root, from the enrollment profile
        info = {"common_name": name, "sha256": fp, "serial": format(cert.serial_number, "x"),
                "not_after": _ISO(cert.not_valid_after_utc)}
        row = by_fp.get(fp)
        if row is not None:
            if row.revoked_at is not None:
                findings.append({"kind": "revoked_identity", **info, "revoked_at": _ISO(row.revoked_at)})
            elif cert.not_valid_after_utc <= now:
                findings.append({"kind": "expired_identity", **info})
            else:
                seen_current.append(row)
            continue
        if entry.get("IsIdentity") or ca.issued_this(cert):
            elsewhere = session.scalar(select(IdentityCertificate).where(IdentityCertificate.sha256_fingerprint == fp))
            why = "issued by this server to another device" if elsewhere is not None else "not issued by this server"
            findings.append({"kind": "foreign_identity", **info, "detail": why})
            continue
        others += 1
    if not seen_current:
        findings.append({"kind": "missing_identity",
                         "detail": "no current identity certificate issued to this device is on it"})
    _retire_superseded(session, issued, seen_current, seen_fps)
    check = session.scalar(select(CertificateCheck).where(CertificateCheck.device_id == device.id))
    if check is None:
        check = CertificateCheck(device_id=device.id)
        session.add(check)
    check.checked_at = now
    check.findings = findings
    check.ok = not findings
    session.flush()
    if findings:
        log.warning("certificate check of %s: %s", device.udid, ", ".join(f["kind"] for f in findings))
    return {"checked_at": _ISO(now), "ok": check.ok, "findings": findings, "other_certificates": others}


def _retire_superseded(session: Session, issued, seen_current, seen_fps) -> None:
    """After a renewal: the device holds the new identity and no longer the old one."""
    if not seen_current:
        return
    # Row ids follow issuance order (not_before has only second precision).
    newest = max(seen_current, key=lambda c: c.id)
    for cert in issued:
        if (cert.revoked_at is None and cert.id < newest.id
                and cert.sha256_fingerprint not in seen_fps):
            revoke_identity(session, cert, "superseded")


# --------------------------------------------------------------------------
# Renewal
# --------------------------------------------------------------------------


def expiring_identities(session: Session, settings, now: dt.datetime | None = None) -> list[tuple[Device, IdentityCertificate]]:
    """Each enrolled device whose newest valid identity expires within
    identity_renew_days and has no renewal under way."""
    IdentityRenewal = _renewal_model()
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
    from ipad_mdm.mobileconfig import sign_profile

    IdentityRenewal = _renewal_model()
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
    IdentityRenewal = _renewal_model()
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
            "created_at": _ISO(renewal.created_at), "updated_at": _ISO(renewal.updated_at)}


def device_detail(session: Session, settings, device: Device, detail: dict) -> None:
    from profiles.models import CertificateCheck

    IdentityRenewal = _renewal_model()
    check = session.scalar(select(CertificateCheck).where(CertificateCheck.device_id == device.id))
    detail["certificates_check"] = None if check is None else {
        "checked_at": _ISO(check.checked_at), "ok": check.ok, "findings": check.findings}
    renewal = session.scalar(select(IdentityRenewal).where(IdentityRenewal.device_id == device.id)
                             .order_by(IdentityRenewal.id.desc()).limit(1))
    current = [c for c in device.certificates if c.revoked_at is None]
    newest = max(current, key=lambda c: c.not_after, default=None)
    detail["identity_lifecycle"] = {
        "expires_at": _ISO(newest.not_after) if newest else None,
        "renewal_due": bool(newest and newest.not_after <= utcnow() + dt.timedelta(days=settings.identity_renew_days)),
        "last_renewal": renewal_dict(renewal),
    }


# --------------------------------------------------------------------------
# Binding a renewed identity to its device (see module docstring)
# --------------------------------------------------------------------------


def on_identity_issued(session: Session, identity: IdentityCertificate, token) -> None:
    """SCEP issued an identity: if its challenge came from a renewal, bind it to that device."""
    if identity.device_id is not None or token is None:
        return
    IdentityRenewal = _renewal_model()
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
