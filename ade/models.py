"""Automated Device Enrollment storage (migration 0024_ade).

  ade_tokens    Apple Business Manager server tokens: the OAuth credentials (sealed under the instance
                data key, never shown again), the MDM server's name in ABM, expiry, sync cursor
  ade_devices   the iPads ABM assigned to this MDM server, as the last sync saw them
  ade_profiles  the enrollment profiles defined at Apple (what was sent, what Apple answered)
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ipad_mdm.db import Base, utcnow


class AdeToken(Base):
    __tablename__ = "ade_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    consumer_key: Mapped[str] = mapped_column(String(128), unique=True)
    credentials_enc: Mapped[str] = mapped_column(Text)
    access_token_expiry: Mapped[dt.datetime] = mapped_column()
    server_name: Mapped[str] = mapped_column(String(255), default="")
    server_uuid: Mapped[str] = mapped_column(String(64), default="")
    org_name: Mapped[str] = mapped_column(String(255), default="")
    cursor: Mapped[str | None] = mapped_column(Text, default=None)
    fetched_all_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(300), default=None)
    # The smallest "days left" threshold (30, 14, 7) already warned about.
    warned_days: Mapped[int | None] = mapped_column(Integer, default=None)
    profile_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AdeDevice(Base):
    __tablename__ = "ade_devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("ade_tokens.id", ondelete="CASCADE"), index=True)
    serial_number: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    color: Mapped[str] = mapped_column(String(64), default="")
    asset_tag: Mapped[str] = mapped_column(String(128), default="")
    os: Mapped[str] = mapped_column(String(32), default="")
    device_family: Mapped[str] = mapped_column(String(32), default="")
    profile_status: Mapped[str] = mapped_column(String(32), default="empty")
    profile_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    op_type: Mapped[str] = mapped_column(String(16), default="added")
    removed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    synced_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AdeProfile(Base):
    __tablename__ = "ade_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("ade_tokens.id", ondelete="CASCADE"), index=True)
    profile_uuid: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict] = mapped_column()
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
