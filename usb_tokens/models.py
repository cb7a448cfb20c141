"""USB token storage (migration 0020_usb_tokens).

Tables
  usb_tokens        one signing token of the state cipher authority's CA (or another accredited CA): its
                    serial, type, who holds it, and the public signing certificate it carries (subject,
                    issuer, serial, validity, the DER itself). Never a PIN, never a private key: tokens keep
                    those, and the registry has no use for them.
  usb_token_events  the append-only history of each token (registered, certificate loaded, handed over,
                    returned, lost, revoked), with the handover minute it went with and, for a loss, the
                    revocation request's number from its yearly register
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow


class UsbToken(Base):
    __tablename__ = "usb_tokens"
    __table_args__ = (Index("ix_usb_tokens_state_not_after", "state", "cert_not_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    serial_number: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(128), default="")
    state: Mapped[str] = mapped_column(String(16), default="in_stock")
    holder_leader_id: Mapped[int | None] = mapped_column(ForeignKey("gateway_leaders.id"), default=None, index=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), default=None)
    cert_subject: Mapped[str] = mapped_column(String(1024), default="")
    cert_holder_name: Mapped[str] = mapped_column(String(255), default="")
    cert_issuer: Mapped[str] = mapped_column(String(1024), default="")
    cert_issuer_name: Mapped[str] = mapped_column(String(255), default="")
    cert_serial: Mapped[str] = mapped_column(String(64), default="")
    cert_not_before: Mapped[dt.datetime | None] = mapped_column(default=None)
    cert_not_after: Mapped[dt.datetime | None] = mapped_column(default=None)
    cert_sha256: Mapped[str] = mapped_column(String(64), default="")
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    cert_source: Mapped[str] = mapped_column(String(16), default="")  # "file" | "pkcs11"
    # The tightest expiry threshold (30/14/7/0 days) already warned about for this certificate.
    expiry_warned: Mapped[int | None] = mapped_column(Integer, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lost_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    events: Mapped[list["UsbTokenEvent"]] = relationship(back_populates="token", order_by="UsbTokenEvent.id",
                                                         cascade="all, delete-orphan")


class UsbTokenEvent(Base):
    __tablename__ = "usb_token_events"
    __table_args__ = (UniqueConstraint("letter_year", "letter_number", name="uq_usb_token_letter_register"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("usb_tokens.id"), index=True)
    action: Mapped[str] = mapped_column(String(24))
    from_state: Mapped[str | None] = mapped_column(String(16), default=None)
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    by: Mapped[str] = mapped_column(String(128), default="")
    leader_id: Mapped[int | None] = mapped_column(Integer, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict | None] = mapped_column(default=None)
    letter_year: Mapped[int | None] = mapped_column(Integer, default=None)
    letter_number: Mapped[int | None] = mapped_column(Integer, default=None)

    token: Mapped[UsbToken] = relationship(back_populates="events")
