"""Storage of the device-identity lifecycle: the current CRL, renewals, CertificateList checks.

Tables (moved from the profiles package by migration 0012_identity_tables):
  mdm_crl_state            the current signed CRL (single row); its CRLNumber only grows
  mdm_identity_renewals    one renewal of a device's identity (challenge, command, new identity)
  mdm_certificate_checks   the latest comparison of a device's CertificateList with what we issued
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from ipad_mdm.db import Base, utcnow


class CrlState(Base):
    """The current signed CRL (single row). Regenerated when the revoked set
    changes or half its validity has passed; `number` only ever grows."""

    __tablename__ = "mdm_crl_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, default=0)
    # sha256 over the sorted (serial, revocation time) list the CRL was built from.
    content_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    der: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    this_update: Mapped[dt.datetime | None] = mapped_column(default=None)
    next_update: Mapped[dt.datetime | None] = mapped_column(default=None)


class IdentityRenewal(Base):
    """One renewal of a device's identity: a one-time SCEP challenge (carried by
    an EnrollmentToken row) pushed to the device in a re-issued enrollment profile."""

    __tablename__ = "mdm_identity_renewals"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    old_identity_id: Mapped[int] = mapped_column(ForeignKey("identity_certificates.id"))
    enrollment_token_id: Mapped[int] = mapped_column(ForeignKey("enrollment_tokens.id"), unique=True)
    # pending -> acknowledged (profile installed) -> issued (new identity made) -> completed
    # (the device signs with it; the old one is revoked) | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    command_uuid: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    new_identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity_certificates.id"), default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CertificateCheck(Base):
    """The latest comparison of a device's CertificateList with what we issued."""

    __tablename__ = "mdm_certificate_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    checked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    findings: Mapped[list] = mapped_column(default=list)
