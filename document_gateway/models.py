"""Document gateway storage (migration 0005_gateway).

Tables
  gateway_leaders              the office's leaders (lãnh đạo) who read documents on iPads
  gateway_device_assignments   which leader holds which iPad; one open row (returned_at NULL) per device
  gateway_documents            document metadata; the bytes live in <instance>/documents/ by SHA-256
  gateway_document_units       extra units (besides the owning unit) allowed to see a document
  gateway_device_epochs        a per-device generation counter: every change that can alter a gateway
                               decision bumps it in the same transaction, so every process drops its
                               cached decision on the device's very next request
  gateway_audit_head           the single chain-head row (id 1): last sequence number and last hash;
                               appends lock this row, which serialises the hash chain
  gateway_audit_events         the append-only, hash-chained decision log (see GatewayAuditEvent)
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow

# Leader roles, most senior first. The Government Office's titles:
#   minister        Bộ trưởng, Chủ nhiệm Văn phòng Chính phủ
#   vice_minister   Thứ trưởng, Phó Chủ nhiệm Văn phòng Chính phủ
#   director        Vụ trưởng / Cục trưởng / Giám đốc (head of a unit)
#   deputy_director Phó Vụ trưởng / Phó Cục trưởng / Phó Giám đốc
LEADER_ROLES = ("minister", "vice_minister", "director", "deputy_director")

CLASSIFICATIONS = ("public", "internal", "confidential", "secret")

SIGNATURE_STATUSES = ("valid", "invalid", "unsigned")


class Leader(Base):
    """A leader of the office. Deactivating a leader denies every iPad assigned to them at once."""

    __tablename__ = "gateway_leaders"

    id: Mapped[int] = mapped_column(primary_key=True)
    full_name: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(255), default="")
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DeviceAssignment(Base):
    """An iPad handed to a leader (bàn giao) until it is returned.

    History is kept: returning a device sets returned_at; a new assignment is a new row.
    At most one open row per device is enforced by the service (assign_device locks and
    closes the previous one) and, on PostgreSQL and SQLite, by a partial unique index.
    """

    __tablename__ = "gateway_device_assignments"
    __table_args__ = (
        Index("ix_gateway_assignment_open_device", "device_id", unique=True,
              postgresql_where=text("returned_at IS NULL"), sqlite_where=text("returned_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    leader_id: Mapped[int] = mapped_column(ForeignKey("gateway_leaders.id"), index=True)
    assigned_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    assigned_by: Mapped[str] = mapped_column(String(128), default="")
    returned_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    returned_by: Mapped[str | None] = mapped_column(String(128), default=None)

    leader: Mapped[Leader] = relationship()


class Document(Base):
    """Metadata of one uploaded document.

    public_id   opaque, random (128 bits, URL-safe base64); the only identifier a client ever sees
    sha256      content address: the file is <instance>/documents/<aa>/<bb>/<sha256>; never derived
                from anything a client sends
    unit_id     the owning unit; its leaders always see the document (classification permitting)
    all_units   visible to every unit's leaders (office-wide circulars)
    visible_roles  JSON list of leader roles allowed; empty = every role (classification permitting)
    signature_* result of verifying embedded PDF signatures with pyHanko at upload
    """

    __tablename__ = "gateway_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(43), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    filename: Mapped[str] = mapped_column(String(255))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    all_units: Mapped[bool] = mapped_column(Boolean, default=False)
    visible_roles: Mapped[list] = mapped_column(default=list)
    classification: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    uploaded_by: Mapped[str] = mapped_column(String(128))
    uploaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    signature_status: Mapped[str] = mapped_column(String(16), default="unsigned")
    signature_signer: Mapped[str | None] = mapped_column(String(1000), default=None)
    signature_signed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Per-signature findings (intact, valid, trusted, coverage, reason) for the admin API.
    signature_details: Mapped[list] = mapped_column(default=list)
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    units: Mapped[list["DocumentUnit"]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def visible_unit_ids(self) -> list[int]:
        return sorted(u.unit_id for u in self.units)


class DocumentUnit(Base):
    __tablename__ = "gateway_document_units"

    document_id: Mapped[int] = mapped_column(ForeignKey("gateway_documents.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), primary_key=True, index=True)


class DeviceAccess(Base):
    """What the gateway's decision needs about a device that only a verdict, an assignment or a
    leader change can alter: precomputed in the very transaction of that change
    (service.access_changed), so a request reads it with its certificate in one query."""

    __tablename__ = "gateway_device_access"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    leader_id: Mapped[int | None] = mapped_column(Integer, default=None)
    leader_name: Mapped[str | None] = mapped_column(String(255), default=None)
    leader_title: Mapped[str | None] = mapped_column(String(255), default=None)
    leader_role: Mapped[str | None] = mapped_column(String(32), default=None)
    leader_unit_id: Mapped[int | None] = mapped_column(Integer, default=None)
    leader_active: Mapped[bool] = mapped_column(Boolean, default=False)
    verdict_state: Mapped[str | None] = mapped_column(String(16), default=None)
    grace_deadline: Mapped[dt.datetime | None] = mapped_column(default=None)
    # "no policy applies" is its own reason for refusing (verdict_unassessed).
    unassessed: Mapped[bool] = mapped_column(Boolean, default=False)
    reasons_vi: Mapped[list] = mapped_column(default=list)
    reasons_en: Mapped[list] = mapped_column(default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditHead(Base):
    """The chain head: exactly one row, id 1. Appends update it first, which takes the
    row lock on PostgreSQL and the write lock on SQLite, so appends are serialised."""

    __tablename__ = "gateway_audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class GatewayAuditEvent(Base):
    """One gateway decision. Append-only and hash-chained; the monthly report reads it.

    Columns (copies, not pointers: devices, leaders and documents may change or disappear later)
      id             sequence number, 1, 2, 3, … with no gaps (taken from the chain head)
      at             UTC time of the decision
      action         "list" (GET /docs/), "view" (GET /docs/<id>) or "edge" (a reverse proxy asked
                     whether to pass a request to the office's document system: edge.py)
      decision       "allow" or "deny"
      reason_code    machine-readable reason: allowed, allowed_grace, no_client_certificate,
                     untrusted_proxy, certificate_invalid, certificate_untrusted, certificate_expired,
                     certificate_unknown, certificate_revoked, certificate_unbound, device_retired,
                     device_checked_out, device_not_enrolled, lost_mode, not_assigned, leader_inactive,
                     verdict_unknown, verdict_unassessed, verdict_non_compliant, verdict_blocked, grace_expired,
                     audit_unavailable,
                     document_unknown, document_not_visible, classification_secret,
                     classification_not_allowed, internal_error
      reason_vi / reason_en   the human reason shown to the leader (Vietnamese / English)
      http_status    the HTTP status answered (200, 206, 403, 404, 416, …)
      device_udid, device_id  the device, when the certificate identified one
      cert_sha256    SHA-256 fingerprint of the client certificate presented (if any)
      leader_id, leader_name, leader_role, leader_unit_id   the leader the device is assigned to
      verdict_state  compliance state at decision time (compliant, grace, …) or NULL
      document_public_id   the id asked for (as sent, truncated to 64 chars), NULL for "list"
      document_id, classification   the document, when it exists
      client_ip      the client's IP (the proxy's X-Forwarded-For entry when the proxy is trusted)
      request_method, request_uri   "edge" rows: the original request the proxy asked about
      prev_hash      row_hash of the previous row ("0" * 64 for the first)
      row_hash       HMAC-SHA256(audit key, prev_hash + canonical JSON of every other column), hex
      chain_version  2 (keyed); 1 for rows written before the audit key existed (plain SHA-256)
    """

    __tablename__ = "gateway_audit_events"
    __table_args__ = (
        Index("ix_gateway_audit_device_at", "device_udid", "at"),
        Index("ix_gateway_audit_leader_at", "leader_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(8), index=True)
    reason_code: Mapped[str] = mapped_column(String(48))
    reason_vi: Mapped[str] = mapped_column(Text)
    reason_en: Mapped[str] = mapped_column(Text)
    http_status: Mapped[int] = mapped_column(Integer)
    device_udid: Mapped[str | None] = mapped_column(String(64), default=None)
    device_id: Mapped[int | None] = mapped_column(Integer, default=None)
    cert_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    leader_id: Mapped[int | None] = mapped_column(Integer, default=None)
    leader_name: Mapped[str | None] = mapped_column(String(255), default=None)
    leader_role: Mapped[str | None] = mapped_column(String(32), default=None)
    leader_unit_id: Mapped[int | None] = mapped_column(Integer, default=None)
    verdict_state: Mapped[str | None] = mapped_column(String(16), default=None)
    document_public_id: Mapped[str | None] = mapped_column(String(64), default=None)
    document_id: Mapped[int | None] = mapped_column(Integer, default=None)
    classification: Mapped[str | None] = mapped_column(String(16), default=None)
    client_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    # Decisions for the reverse proxy (action "edge"): the original request. Hashed only when set,
    # so rows written before these columns existed keep their hashes.
    request_method: Mapped[str | None] = mapped_column(String(16), default=None)
    request_uri: Mapped[str | None] = mapped_column(String(2048), default=None)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))
    # 1: plain SHA-256 (rows from before the audit key); 2: HMAC-SHA256 with the audit key.
    chain_version: Mapped[int] = mapped_column(Integer, default=2, server_default="1")


class AuditCheckpoint(Base):
    """A signed statement "the chain had `seq` rows ending in `head_hash` at `at`" (audit.py)."""

    __tablename__ = "gateway_audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column()
    # CMS SignedData (DER, detached) over the canonical JSON of (seq, head_hash, at).
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class AuditQuarantine(Base):
    """Rows found past the chain head (written outside the gateway), kept as evidence."""

    __tablename__ = "gateway_audit_quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    original_id: Mapped[int] = mapped_column(Integer)
    row: Mapped[dict] = mapped_column()
    quarantined_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
