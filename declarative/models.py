"""Storage of declarations as data: versioned like profiles, assigned to a device, a unit or all,
and what each device reports of them.

A declaration's content is never edited in place: every change is a new DeclarationVersion
whose ServerToken is a hash of the content, so the token changes exactly when the content does.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow

TARGET_TYPES = ("device", "unit", "all")


class Declaration(Base):
    __tablename__ = "ddm_declarations"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # activation | asset | configuration | management
    display_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    versions: Mapped[list["DeclarationVersion"]] = relationship(
        back_populates="declaration", order_by="DeclarationVersion.version", cascade="all, delete-orphan")
    assignments: Mapped[list["DeclarationAssignment"]] = relationship(
        back_populates="declaration", order_by="DeclarationAssignment.id", cascade="all, delete-orphan")


class DeclarationVersion(Base):
    __tablename__ = "ddm_declaration_versions"
    __table_args__ = (UniqueConstraint("declaration_id", "version", name="uq_ddm_declaration_versions"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    declaration_id: Mapped[int] = mapped_column(ForeignKey("ddm_declarations.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    # The operator's payload (without what the server renders) and, for assets and legacy
    # profiles, where the rendered part comes from: {"certificate": PEM} | {"instance_ca": true}
    # | {"device_identity": {...}} | {"data": base64, "content_type"} | {"profile": identifier}.
    payload: Mapped[dict] = mapped_column()
    source: Mapped[dict | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    declaration: Mapped[Declaration] = relationship(back_populates="versions")


class DeclarationAssignment(Base):
    """Which devices get a declaration; `predicate` (activations made for configurations) limits
    where it activates, evaluated by the device (Apple's predicate format)."""

    __tablename__ = "ddm_assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    declaration_id: Mapped[int] = mapped_column(ForeignKey("ddm_declarations.id"), index=True)
    target_type: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True, default=None)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), default=None)
    predicate: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    declaration: Mapped[Declaration] = relationship(back_populates="assignments")


class DeclarationState(Base):
    """What a device last reported of one declaration (status item management.declarations)."""

    __tablename__ = "ddm_declaration_states"
    __table_args__ = (UniqueConstraint("device_id", "identifier", name="uq_ddm_declaration_states"),
                      Index("ix_ddm_declaration_states_valid", "valid"))

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    identifier: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    server_token: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    valid: Mapped[str] = mapped_column(String(16), default="unknown")  # valid | invalid | unknown
    reasons: Mapped[list | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Since when it is reported invalid with this server token (for reports and the console).
    failing_since: Mapped[dt.datetime | None] = mapped_column(default=None)


class DeviceSync(Base):
    """The declarations token a device was last served and the last sync the server asked for."""

    __tablename__ = "ddm_device_sync"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    served_token: Mapped[str | None] = mapped_column(String(64), default=None)
    served_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    requested_token: Mapped[str | None] = mapped_column(String(64), default=None)
    requested_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class DeviceCredential(Base):
    """A per-device identity (key + certificate from the instance CA) delivered as a
    credential.identity asset. The PKCS#12 and its password are Fernet-encrypted at rest and
    served only to the device itself, authenticated with its MDM identity."""

    __tablename__ = "ddm_device_credentials"
    __table_args__ = (UniqueConstraint("device_id", "declaration_id", name="uq_ddm_device_credentials"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    declaration_id: Mapped[int] = mapped_column(ForeignKey("ddm_declarations.id"))
    version: Mapped[int] = mapped_column(Integer)
    serial: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[dt.datetime] = mapped_column()
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet(JSON credential document)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
