"""Reports storage (migration 0006_reports).

reports_reports   one row per generated (or generating) report. (kind, period, lang) is
                  unique: that constraint — not a lock — is what keeps several web/worker
                  processes from generating the same monthly report twice; whoever inserts
                  the row owns the generation, the others see the row and step back.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ipad_mdm.db import Base, utcnow

KINDS = ("monthly", "yearly")
STATUSES = ("pending", "running", "done", "failed")
FORMATS = ("html", "pdf", "xlsx", "csv")
LANGS = ("vi", "en")


class Report(Base):
    __tablename__ = "reports_reports"
    __table_args__ = (
        UniqueConstraint("kind", "period", "lang", name="uq_reports_kind_period_lang"),
        Index("ix_reports_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # monthly | yearly
    period: Mapped[str] = mapped_column(String(16))  # "2026-10" | "2026"
    lang: Mapped[str] = mapped_column(String(8))  # vi | en
    formats: Mapped[list] = mapped_column(default=list)  # requested formats, e.g. ["pdf", "xlsx"]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Bumped every time a generation is claimed; a worker only writes back results if its
    # attempt is still the current one (a stale worker cannot overwrite a newer run).
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # {"pdf": {"path": "reports/monthly/2026-10/vi/…pdf" (relative to the instance folder),
    #          "sha256": "…", "size": 12345}, …}
    files: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
