"""Storage for versioned configuration profiles, their rollout and drift.

A profile's content is never edited in place: every change is a new
`ProfileVersion`, so what a device received can always be reproduced and
audited. The plist of a version is rebuilt from its stored payload dicts and
checked against `plist_sha256` before it is signed (see service.build_plist).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow

# ProfileInstallation.status. `action` says what a pending/failed row was about
# (install or remove), so the four statuses the office reports on stay simple.
INSTALL_STATUSES = ("pending", "installed", "failed", "removed")
DRIFT_KINDS = ("missing", "unexpected", "outdated")
TARGET_TYPES = ("device", "unit", "all")


class ConfigurationProfile(Base):
    __tablename__ = "configuration_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    versions: Mapped[list["ProfileVersion"]] = relationship(
        back_populates="profile", order_by="ProfileVersion.version", cascade="all, delete-orphan"
    )
    assignments: Mapped[list["ProfileAssignment"]] = relationship(
        back_populates="profile", order_by="ProfileAssignment.id", cascade="all, delete-orphan"
    )


class ProfileVersion(Base):
    __tablename__ = "profile_versions"
    __table_args__ = (UniqueConstraint("profile_id", "version", name="uq_profile_versions_profile_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("configuration_profiles.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    # Top-level PayloadUUID of this version: a new one per version, so the UUID a
    # device reports in ProfileList tells which version it really has.
    profile_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    display_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    # Snapshot of settings.organization: renaming the office must not change
    # (and so invalidate) the bytes of versions already reviewed.
    organization: Mapped[str] = mapped_column(String(255), default="")
    removal_disallowed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Payload dicts as JSON; plist data values as {"$data": base64}.
    payloads: Mapped[list] = mapped_column()
    plist_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    profile: Mapped[ConfigurationProfile] = relationship(back_populates="versions")


class ProfileAssignment(Base):
    """Which devices should carry a profile: one device, one unit, or every device."""

    __tablename__ = "profile_assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("configuration_profiles.id"), index=True)
    target_type: Mapped[str] = mapped_column(String(16))  # device | unit | all
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True, default=None)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    profile: Mapped[ConfigurationProfile] = relationship(back_populates="assignments")


class ProfileInstallation(Base):
    """What the server believes about one profile on one device (one row per pair;
    the command history keeps every attempt)."""

    __tablename__ = "profile_installations"
    __table_args__ = (UniqueConstraint("device_id", "profile_id", name="uq_profile_installations_device_profile"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("configuration_profiles.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("profile_versions.id"))
    action: Mapped[str] = mapped_column(String(16), default="install")  # install | remove
    status: Mapped[str] = mapped_column(String(16), default="pending")
    command_uuid: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    installed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    removed_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    profile: Mapped[ConfigurationProfile] = relationship()
    version: Mapped[ProfileVersion] = relationship()


class ProfileDrift(Base):
    """A difference between the device's ProfileList and the server's belief.

    Open while `resolved_at` is NULL; a later ProfileList that no longer shows
    the difference resolves it, so the table is also the drift history.
    """

    __tablename__ = "profile_drift"
    __table_args__ = (Index("ix_profile_drift_device_open", "device_id", "resolved_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    identifier: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # missing | unexpected | outdated
    expected_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    reported_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    is_enrollment_profile: Mapped[bool] = mapped_column(Boolean, default=False)
    detected_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(default=None)
