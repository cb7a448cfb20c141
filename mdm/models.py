"""MDM storage: enrollment tokens, devices, identity certificates, commands."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import DDL, BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, event, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow


class EnrollmentToken(Base):
    """A one-time authorisation to fetch the enrollment profile, made by IT staff."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    serial_number: Mapped[str | None] = mapped_column(String(64), default=None)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    profile_fetched_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The SCEP challenge embedded in the profile; single use.
    challenge_sha256: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    challenge_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Set by an explicit re-enrollment (`ipad-mdm device re-enroll UDID`): only an identity
    # from this token may take over that device's UDID, and the old identity is revoked then.
    # (devices.id; not a foreign key: devices already points at this table.)
    reenroll_device_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)


class Device(Base):
    __tablename__ = "devices"
    # The provisioning pass finds its work without reading the fleet.
    __table_args__ = (Index("ix_devices_provision_pending", "id", postgresql_where=text("provision_pending"),
                            sqlite_where=text("provision_pending")),)

    id: Mapped[int] = mapped_column(primary_key=True)
    udid: Mapped[str] = mapped_column(String(64), unique=True)
    serial_number: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), default=None)
    enrollment_token_id: Mapped[int | None] = mapped_column(ForeignKey("enrollment_tokens.id"), default=None)
    # The identity certificate the device currently signs with (identity_certificates.id; not a
    # foreign key to keep the two tables free of a cycle). A newer identity of the same device
    # replaces it on first use and the older ones are revoked as superseded.
    current_identity_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # enrolled -> checked_out / retired
    enrollment_state: Mapped[str] = mapped_column(String(24), default="authenticated")
    model: Mapped[str | None] = mapped_column(String(64), default=None)
    model_name: Mapped[str | None] = mapped_column(String(128), default=None)
    product_name: Mapped[str | None] = mapped_column(String(64), default=None)
    os_version: Mapped[str | None] = mapped_column(String(32), default=None)
    build_version: Mapped[str | None] = mapped_column(String(32), default=None)
    device_name: Mapped[str | None] = mapped_column(String(255), default=None)
    imei: Mapped[str | None] = mapped_column(String(32), default=None)
    topic: Mapped[str | None] = mapped_column(String(255), default=None)
    push_token: Mapped[str | None] = mapped_column(String(200), default=None)  # hex
    push_magic: Mapped[str | None] = mapped_column(String(200), default=None)
    # UnlockToken can clear the passcode: kept Fernet-encrypted (instance data key), never returned by the API.
    unlock_token: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    awaiting_configuration: Mapped[bool] = mapped_column(Boolean, default=False)
    is_supervised: Mapped[bool | None] = mapped_column(Boolean, default=None)
    lost_mode_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    enrolled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    token_updated_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    checked_out_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The first TokenUpdate of the current enrollment: inventory stored before it belongs to an
    # earlier enrollment of this iPad. provision_pending: what the other packages do for a new
    # enrollment (devices.enrolled) has not run yet (mdm.provisioning runs it off the request path).
    enrollment_completed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    provision_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Push bookkeeping: a push that failed is retried by the scheduler.
    push_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    last_push_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_push_error: Mapped[str | None] = mapped_column(String(255), default=None)
    push_failures: Mapped[int] = mapped_column(Integer, default=0)
    # Inventory, as parsed from the latest answers (plist data converted to JSON).
    device_information: Mapped[dict | None] = mapped_column(default=None)
    device_information_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    security_info: Mapped[dict | None] = mapped_column(default=None)
    security_info_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    profile_list: Mapped[list | None] = mapped_column(default=None)
    profile_list_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    certificate_list: Mapped[list | None] = mapped_column(default=None)
    certificate_list_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    installed_applications: Mapped[list | None] = mapped_column(default=None)
    installed_applications_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Declarative management: on since the device's first DeclarativeManagement check-in; the
    # latest value of every status item it reported ({name: {"value", "at"}}, mdm.ddm.merge_status).
    ddm_enabled_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ddm_status: Mapped[dict | None] = mapped_column(default=None)
    ddm_status_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # PostgreSQL gives the inventory (the five columns above the rules read: device_information,
    # security_info, profile_list, installed_applications, ddm_status) a new number from a sequence
    # whenever a statement writes one of them (trigger, migration 0029), whoever writes it: the
    # compliance run keeps what it reduced from an inventory by this number (compliance.digests).
    # Not maintained on SQLite, which reads the inventory itself every time.
    inventory_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    certificates: Mapped[list["IdentityCertificate"]] = relationship(back_populates="device")


# The sequence and trigger behind devices.inventory_version on PostgreSQL: made by migration 0029,
# and by metadata.create_all (the event below), so a schema made either way numbers inventories.
INVENTORY_VERSION_DDL = (
    "CREATE SEQUENCE IF NOT EXISTS device_inventory_versions OWNED BY devices.inventory_version",
    "ALTER TABLE devices ALTER COLUMN inventory_version SET DEFAULT nextval('device_inventory_versions')",
    """CREATE OR REPLACE FUNCTION ipad_mdm_inventory_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.inventory_version := nextval('device_inventory_versions');
  RETURN NEW;
END $$""",
    "CREATE TRIGGER devices_inventory_version BEFORE UPDATE OF device_information, security_info, profile_list, "
    "installed_applications, ddm_status ON devices FOR EACH ROW EXECUTE FUNCTION ipad_mdm_inventory_written()",
)


class IdentityCertificate(Base):
    """A device identity certificate issued by the project's CA over SCEP."""

    __tablename__ = "identity_certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)  # hex, lowercase
    sha256_fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(512))
    not_before: Mapped[dt.datetime] = mapped_column()
    not_after: Mapped[dt.datetime] = mapped_column()
    der: Mapped[bytes] = mapped_column(LargeBinary)
    enrollment_token_id: Mapped[int | None] = mapped_column(ForeignKey("enrollment_tokens.id"), default=None)
    # Bound on first authenticated use (Authenticate names the UDID).
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True, default=None)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revocation_reason: Mapped[str | None] = mapped_column(String(64), default=None)

    device: Mapped[Device | None] = relationship(back_populates="certificates")


class Command(Base):
    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_device_status", "device_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(64), unique=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    request_type: Mapped[str] = mapped_column(String(64))
    # The command dictionary as sent (plist, binary payloads included).
    command_plist: Mapped[bytes] = mapped_column(LargeBinary)
    # queued -> sent -> acknowledged | error | command_format_error ; notnow -> sent again
    status: Mapped[str] = mapped_column(String(24), default="queued")
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    completed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict | None] = mapped_column(default=None)
    error_chain: Mapped[list | None] = mapped_column(default=None)

    events: Mapped[list["CommandEvent"]] = relationship(back_populates="command", order_by="CommandEvent.id")


class CommandEvent(Base):
    """One status change of a command (its history)."""

    __tablename__ = "command_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    command_id: Mapped[int] = mapped_column(ForeignKey("commands.id"), index=True)
    status: Mapped[str] = mapped_column(String(24))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text, default=None)

    command: Mapped[Command] = relationship(back_populates="events")


class CheckinEvent(Base):
    """Every accepted check-in message, for the reports (enrollment progress, check-outs)."""

    __tablename__ = "checkin_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True, default=None)
    udid: Mapped[str] = mapped_column(String(64))
    message_type: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StatusReportRecord(Base):
    """One declarative status report as received (full or incremental), for history and reports."""

    __tablename__ = "ddm_status_reports"
    __table_args__ = (Index("ix_ddm_status_reports_device_at", "device_id", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    full_report: Mapped[bool] = mapped_column(Boolean, default=False)
    # The flattened items as reported ({"passcode.is-compliant": false, ...}) and the names that changed.
    items: Mapped[dict] = mapped_column()
    changed: Mapped[list] = mapped_column()
    errors: Mapped[list | None] = mapped_column(default=None)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)


for _statement in INVENTORY_VERSION_DDL:
    event.listen(Device.__table__, "after_create", DDL(_statement.replace("%", "%%")).execute_if(dialect="postgresql"))
