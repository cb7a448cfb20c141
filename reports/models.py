"""Reports storage (migrations 0006_reports, 0014_report_register).

reports_reports   one row per generated (or generating) report. (kind, period, lang) is
                  unique: that constraint — not a lock — is what keeps several web/worker
                  processes from generating the same monthly report twice; whoever inserts
                  the row owns the generation, the others see the row and step back.
                  A report over an unfinished period is marked provisional (with the instant
                  its figures stop) and is regenerated, never reused, until the period is over.
reports_register  the office's yearly register of issued reports: "Số: 12/BC-TTTH". One number
                  per final report (kind, period), shared by its language versions; numbers
                  restart at 1 each calendar year; (year, number) is unique.
reports_month_figures
                  the headline figures and risks of a finished month, frozen when first
                  computed: the next month's report compares against them instead of
                  recomputing the month.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
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
    provisional: Mapped[bool] = mapped_column(Boolean, default=False)
    until: Mapped[dt.datetime | None] = mapped_column(default=None)  # figures up to this instant
    number: Mapped[int | None] = mapped_column(Integer, default=None)  # the register's number (final only)


class RegisterEntry(Base):
    __tablename__ = "reports_register"
    __table_args__ = (
        UniqueConstraint("year", "number", name="uq_reports_register_number"),
        UniqueConstraint("kind", "period", name="uq_reports_register_report"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    year: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MonthFiguresRecord(Base):
    __tablename__ = "reports_month_figures"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "2026-10"
    kpis: Mapped[dict] = mapped_column(default=dict)
    risks: Mapped[list] = mapped_column(default=list)
    computed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
