"""Enrollment: one-time tokens, the signed OTA enrollment profile, SCEP issuance."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ipad_mdm import mobileconfig as payloads
from ipad_mdm.db import utcnow

from .models import EnrollmentToken, IdentityCertificate

log = logging.getLogger(__name__)

IDENTITY_CN_PREFIX = "ipad-mdm-identity-"
ACCESS_RIGHTS_ALL = 8191  # every right an MDM server may ask for on iOS


class EnrollmentRefused(Exception):
    """The token cannot be used; `reason` is safe to show the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def create_token(session: Session, *, ttl_hours: int, serial_number: str | None = None,
                 unit_id: int | None = None, created_by: str = "",
                 reenroll_device_id: int | None = None) -> tuple[str, EnrollmentToken]:
    """Make a one-time enrollment token. Only its hash is stored."""
    plain = secrets.token_urlsafe(24)
    row = EnrollmentToken(
        token_sha256=sha256_hex(plain),
        serial_number=(serial_number or None),
        unit_id=unit_id,
        created_by=created_by,
        reenroll_device_id=reenroll_device_id,
        expires_at=utcnow() + dt.timedelta(hours=ttl_hours),
    )
    session.add(row)
    session.flush()
    return plain, row


# The claim's RETURNING row is the session's view of the token: the ORM need not evaluate the WHERE
# clause in Python against the rows it holds (mdm.commands claims commands the same way).
_RETURNED = {"synchronize_session": False, "populate_existing": True}


def redeem_token(session: Session, plain: str | None) -> tuple[EnrollmentToken, str]:
    """Consume a token for one profile download; returns (token row, SCEP challenge)."""
    if not plain or len(plain) > 128:
        raise EnrollmentRefused("missing or malformed enrollment token")
    now = utcnow()
    digest = sha256_hex(plain)
    challenge = secrets.token_urlsafe(24)
    # One conditional UPDATE that only a usable token matches: two concurrent downloads cannot both
    # consume it. A refusal reads the row again to say why.
    row = session.scalars(
        update(EnrollmentToken)
        .where(EnrollmentToken.token_sha256 == digest, EnrollmentToken.profile_fetched_at.is_(None),
               EnrollmentToken.revoked_at.is_(None), EnrollmentToken.expires_at > now)
        .values(profile_fetched_at=now, challenge_sha256=sha256_hex(challenge))
        .returning(EnrollmentToken), execution_options=_RETURNED).first()
    if row is not None:
        return row, challenge
    row = session.scalar(select(EnrollmentToken).where(EnrollmentToken.token_sha256 == digest))
    if row is None:
        raise EnrollmentRefused("unknown enrollment token")
    if row.revoked_at is not None:
        raise EnrollmentRefused("enrollment token was revoked")
    if row.profile_fetched_at is not None:
        raise EnrollmentRefused("enrollment token was already used")
    raise EnrollmentRefused("enrollment token has expired")


@dataclass(frozen=True)
class EnrollmentURLs:
    base_url: str

    @property
    def server(self) -> str:
        return f"{self.base_url}/mdm/connect"

    @property
    def checkin(self) -> str:
        return f"{self.base_url}/mdm/checkin"

    @property
    def scep(self) -> str:
        return f"{self.base_url}/scep"

    def enroll(self, token: str) -> str:
        return f"{self.base_url}/mdm/enroll?token={token}"


def build_enrollment_profile(*, urls: EnrollmentURLs, topic: str, ca_cert: x509.Certificate,
                             challenge: str, token: EnrollmentToken, organization: str,
                             org_identifier: str) -> bytes:
    """The enrollment profile plist: CA certificate, SCEP identity, MDM payload."""
    scep_uuid = str(uuid.uuid4()).upper()
    ca = payloads.root_certificate_payload(
        identifier=f"{org_identifier}.enroll.ca",
        certificate_der=ca_cert.public_bytes(serialization.Encoding.DER),
        display_name="Chứng thư số gốc của hệ thống quản lý iPad (MDM)",
    )
    scep = payloads.scep_payload(
        identifier=f"{org_identifier}.enroll.scep",
        uuid=scep_uuid,
        url=urls.scep,
        name="ipad-mdm",
        subject=[[["O", organization]], [["CN", f"{IDENTITY_CN_PREFIX}{token.id}"]]],
        challenge=challenge,
        keysize=2048,
        key_usage=5,
        display_name="Chứng thư số định danh thiết bị",
    )
    mdm = payloads.mdm_payload(
        identifier=f"{org_identifier}.enroll.mdm",
        server_url=urls.server,
        check_in_url=urls.checkin,
        topic=topic,
        identity_certificate_uuid=scep_uuid,
        sign_message=True,
        access_rights=ACCESS_RIGHTS_ALL,
        check_out_when_removed=True,
        display_name="Quản lý thiết bị di động (MDM)",
    )
    profile = payloads.Profile(
        identifier=f"{org_identifier}.enroll",
        display_name="Quản lý iPad — Văn phòng Chính phủ",
        organization=organization,
        description="Đăng ký iPad vào hệ thống quản lý thiết bị (MDM) / Enroll this iPad in device management",
        payloads=[ca, scep, mdm],
    )
    return profile.to_plist_bytes()


class ScepRefused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def consume_challenge(session: Session, challenge: str | None) -> EnrollmentToken:
    """A SCEP challenge is valid once, for the enrollment whose profile carried it."""
    if not challenge:
        raise ScepRefused("challenge password missing")
    digest = sha256_hex(challenge)
    now = utcnow()
    # Claimed in one statement (an UPDATE that only a valid, unused challenge matches); a refusal
    # reads the row again to say why.
    row = session.scalars(
        update(EnrollmentToken)
        .where(EnrollmentToken.challenge_sha256 == digest, EnrollmentToken.challenge_used_at.is_(None),
               EnrollmentToken.revoked_at.is_(None), EnrollmentToken.expires_at > now)
        .values(challenge_used_at=now).returning(EnrollmentToken), execution_options=_RETURNED).first()
    if row is not None and hmac.compare_digest(row.challenge_sha256 or "", digest):
        return row
    row = session.scalar(select(EnrollmentToken).where(EnrollmentToken.challenge_sha256 == digest))
    if row is None or not hmac.compare_digest(row.challenge_sha256 or "", digest):
        raise ScepRefused("unknown challenge")
    if row.revoked_at is not None:
        raise ScepRefused("enrollment was revoked")
    if row.challenge_used_at is not None:
        raise ScepRefused("challenge already used")
    raise ScepRefused("enrollment has expired")


def identity_subject(token: EnrollmentToken, organization: str) -> x509.Name:
    """The subject we put in the identity certificate, whatever the CSR asked for."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{IDENTITY_CN_PREFIX}{token.id}"),
        ]
    )


def record_identity(session: Session, cert: x509.Certificate, token_id: int | None,
                    device_id: int | None = None) -> IdentityCertificate:
    """Store an issued identity (a renewal passes the device it is already bound to)."""
    from cryptography.hazmat.primitives import hashes

    row = IdentityCertificate(
        serial=format(cert.serial_number, "x"),
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        der=cert.public_bytes(serialization.Encoding.DER),
        enrollment_token_id=token_id,
        device_id=device_id,
    )
    session.add(row)
    session.flush()
    return row


__all__ = [
    "EnrollmentRefused", "ScepRefused", "EnrollmentURLs", "create_token", "redeem_token",
    "build_enrollment_profile", "consume_challenge", "identity_subject", "record_identity",
]
