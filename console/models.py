"""Console storage (migration 0007_console).

Tables
  console_users            people who sign in to the web console (not API tokens, which stay for /api/v1)
  console_device_records   one physical iPad's way through the IT Center's handover workflow: registered
                           (serial, model, unit) before it ever talks to the MDM, linked to the `devices` row
                           once it enrolls
  console_handover_events  the append-only history of every state change of a record (who, when, from → to),
                           with a JSON snapshot for handover/return minutes so a reprint is identical
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow

CONSOLE_ROLES = ("it_admin", "security_officer", "leader", "auditor")


class User(Base):
    """A console account.

    password_hash   argon2id (argon2-cffi), parameters inside the hash so they can be raised later
                    (check_needs_rehash upgrades it at the next successful login)
    totp_secret_enc the TOTP seed encrypted with the instance Fernet key: a database dump alone does not
                    let anyone mint second-factor codes
    totp_last_step  the last accepted 30-second step, so one code cannot be replayed within its window
    session_version bumped on password change, lock, deactivation: every existing session of the user ends
    """

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), default=None)
    # For leader accounts: the gateway's Leader whose device(s) the account may see.
    leader_id: Mapped[int | None] = mapped_column(ForeignKey("gateway_leaders.id"), default=None, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, default=None)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    last_login_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    password_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LoginThrottle(Base):
    """Failed sign-ins for names that are not (active) accounts, counted like a real account's, so
    the answers for a real and an unknown name are the same: a lockout reveals nothing.
    Keyed by the SHA-256 of the lower-cased name; rows are removed once their lock has passed."""

    __tablename__ = "console_login_throttle"

    name_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class DeviceRecord(Base):
    """One iPad in the handover workflow (see console.handover for the state machine)."""

    __tablename__ = "console_device_records"
    __table_args__ = (Index("ix_console_records_state_unit", "state", "unit_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    serial_number: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(128), default="")
    # None: an iPad enrolled with a token of no unit (adopted; the IT center sets the unit).
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    state: Mapped[str] = mapped_column(String(24), default="registered")
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), default=None, index=True)
    enrollment_token_id: Mapped[int | None] = mapped_column(ForeignKey("enrollment_tokens.id"), default=None)
    # The one-time enrollment URL, Fernet-encrypted: kept only so the QR code can be shown again
    # until the iPad uses it (the token itself is single-use and expires).
    enrollment_url_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    leader_id: Mapped[int | None] = mapped_column(ForeignKey("gateway_leaders.id"), default=None, index=True)
    # The EraseDevice command of a retirement in progress (finalised when the device acknowledges it).
    erase_command_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    events: Mapped[list[HandoverEvent]] = relationship(back_populates="record", order_by="HandoverEvent.id")


class HandoverEvent(Base):
    """One state change of a DeviceRecord. `data` holds what the minute prints (for handed_over and
    returned): device, leader, profiles, certificate serial, as they were at that moment."""

    __tablename__ = "console_handover_events"
    # A minute's number ("Số: 7/BB-TTTH") comes from a yearly register, restarting each year.
    __table_args__ = (UniqueConstraint("minute_year", "minute_number", name="uq_console_minute_register"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("console_device_records.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(24), default=None)
    to_state: Mapped[str] = mapped_column(String(24))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    by: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict | None] = mapped_column(default=None)
    minute_year: Mapped[int | None] = mapped_column(Integer, default=None)
    minute_number: Mapped[int | None] = mapped_column(Integer, default=None)

    record: Mapped[DeviceRecord] = relationship(back_populates="events")
