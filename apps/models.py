"""The app catalog, its releases and where each iPad stands."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ipad_mdm.db import Base, utcnow

# A release goes to the pilot units first; after the acceptance (nghiệm thu) is recorded, to all.
RELEASE_STATES = ("pilot", "accepted", "withdrawn")
DEPLOYMENT_STATES = ("pending", "installing", "installed", "failed")


class App(Base):
    __tablename__ = "apps_apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    bundle_id: Mapped[str] = mapped_column(String(155), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # store | inhouse
    app_store_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # Managed app configuration (ApplicationConfiguration / Configuration) with ${variables}.
    configuration: Mapped[dict | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    releases: Mapped[list["AppRelease"]] = relationship(back_populates="app", order_by="AppRelease.id")


class AppRelease(Base):
    __tablename__ = "apps_releases"
    __table_args__ = (UniqueConstraint("app_id", "version", name="uq_apps_releases_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps_apps.id"), index=True)
    version: Mapped[str] = mapped_column(String(32))
    build: Mapped[str | None] = mapped_column(String(32), default=None)
    state: Mapped[str] = mapped_column(String(16), default="pilot")
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # In-house: the stored file (instance/apps/<sha256>.ipa) and what its provisioning profile says.
    ipa_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    ipa_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    team_id: Mapped[str | None] = mapped_column(String(32), default=None)
    profile_name: Mapped[str | None] = mapped_column(String(255), default=None)
    profile_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The acceptance (nghiệm thu): who, when, the signed minute (stored file) and notes.
    accepted_by: Mapped[str | None] = mapped_column(String(128), default=None)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    acceptance_file: Mapped[str | None] = mapped_column(String(255), default=None)
    acceptance_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    acceptance_notes: Mapped[str | None] = mapped_column(Text, default=None)
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    app: Mapped[App] = relationship(back_populates="releases")


class AppDeployment(Base):
    """Where one iPad stands with one app: the release it should have and what it reported."""

    __tablename__ = "apps_deployments"
    __table_args__ = (UniqueConstraint("device_id", "app_id", name="uq_apps_deployments_device_app"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps_apps.id"), index=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("apps_releases.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    command_uuid: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    installed_version: Mapped[str | None] = mapped_column(String(32), default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
