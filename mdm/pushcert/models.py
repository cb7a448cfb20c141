"""What every server process must agree on about pushes: whether Apple refuses the certificate."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ipad_mdm.db import Base


class PushServiceState(Base):
    """One row (id 1). `state` is about the certificate whose SHA-256 is `fingerprint`: a new certificate
    starts again from "ok"."""

    __tablename__ = "push_service_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    # ok | certificate_rejected (APNs refuses the certificate) | topic_mismatch (device tokens are for
    # another topic) | expired
    state: Mapped[str] = mapped_column(String(32), default="ok")
    reason: Mapped[str | None] = mapped_column(String(128), default=None)  # APNs reason or TLS error
    fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    since: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Expiry warnings already given for the certificate `warned_fingerprint` (30, 14, 7, 0).
    warned_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    warned_days: Mapped[int | None] = mapped_column(Integer, default=None)
    installed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    installed_by: Mapped[str | None] = mapped_column(String(128), default=None)
