"""Generating, storing and tracking reports.

Files live under <instance>/reports/<kind>/<period>/<lang>/ and the Report row records
their relative paths and SHA-256. Generation is claimed with a compare-and-set on the
row (status and attempt), so two processes never both write the same report, and a run
whose process died (status "running" for longer than STALE_AFTER) can be taken over.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import Database, utcnow
from ipad_mdm.files import private_dir, write_atomic
from ipad_mdm.timefmt import iso
from ipad_mdm.refusal import Refusal

from . import assessment, render
from .metrics import MetricOptions
from .models import FORMATS, KINDS, LANGS, MonthFiguresRecord, Report
from .month import compute_month, has_data, month_over_month
from .monthly_doc import monthly_document
from .official import Issuer, local_date, register_number
from .periods import Month, parse_year
from .yearly import Thresholds, compute_year
from .yearly_doc import yearly_document

log = logging.getLogger("reports")
STALE_AFTER = dt.timedelta(minutes=30)
Progress = Callable[[str], None] | None


class ReportInputError(Refusal):
    """Bad kind / period / lang / formats; the message names the field."""


def normalise(kind: str, period: str, lang: str = "vi", formats: Iterable[str] | str | None = None) -> tuple[str, str, str, list[str]]:
    if kind not in KINDS:
        raise ReportInputError(f"kind must be one of {', '.join(KINDS)}", "Vui lòng chọn loại báo cáo (tháng hoặc năm).")
    try:
        period = str(Month.parse(period)) if kind == "monthly" else str(parse_year(period))
    except ValueError as exc:
        raise ReportInputError(f"period: {exc}", "Kỳ báo cáo không hợp lệ: vui lòng nhập tháng dạng 2026-10 "
                                                 "hoặc năm dạng 2026.") from None
    if lang not in LANGS:
        raise ReportInputError(f"lang must be one of {', '.join(LANGS)}", "Vui lòng chọn ngôn ngữ của báo cáo.")
    if formats is None or formats == "":
        formats = list(FORMATS)
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    if not isinstance(formats, (list, tuple)) or not formats or any(f not in FORMATS for f in formats):
        raise ReportInputError(f"formats must be a non-empty subset of {', '.join(FORMATS)}",
                               "Vui lòng chọn ít nhất một định dạng (PDF, HTML, XLSX, CSV).")
    return kind, period, lang, [f for f in FORMATS if f in formats]  # canonical order, no duplicates


def _snapshot(db: Database):
    """One connection for the whole computation; on PostgreSQL a REPEATABLE READ snapshot so
    every table is read as of the same instant while devices keep checking in."""
    conn = db.engine.connect()
    if db.is_postgres:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


@dataclass
class Built:
    outputs: dict[str, bytes]
    provisional: bool
    until: dt.datetime


def period_end(kind: str, period: str) -> dt.datetime:
    return Month.parse(period).end if kind == "monthly" else Month(parse_year(period), 12).end


def _clean(kpis: dict) -> dict:
    """JSON-safe copy of a month's headline figures (numpy scalars → Python, NaN → None)."""
    out = {}
    for key, value in kpis.items():
        value = value.item() if hasattr(value, "item") else value
        out[key] = None if isinstance(value, float) and value != value else value
    return out


def _previous_month(db: Database, conn, month: Month, opts, thresholds) -> tuple[dict | None, list | None]:
    """The previous month's figures and risks: the frozen record when there is one (a finished
    month never changes), else computed once and frozen for the next time."""
    row = conn.execute(select(MonthFiguresRecord.kpis, MonthFiguresRecord.risks)
                       .where(MonthFiguresRecord.month == str(month))).first()
    if row is not None:
        return dict(row.kpis), list(row.risks)
    figures = compute_month(conn, month, opts)
    if not has_data(figures.kpis):
        return None, None  # before the first enrollment: there was no previous month to compare with
    risks = assessment.risks(figures, thresholds)
    freeze_month(db, month, figures.kpis, risks)
    return _clean(figures.kpis), risks


def freeze_month(db: Database, month: Month, kpis: dict, risks: list) -> None:
    with db.session() as s:
        row = s.get(MonthFiguresRecord, str(month))
        if row is None:
            try:
                with s.begin_nested():
                    s.add(MonthFiguresRecord(month=str(month), kpis=_clean(kpis), risks=risks, computed_at=utcnow()))
            except IntegrityError:
                pass  # another process froze it first: same data, same figures
        else:
            row.kpis, row.risks, row.computed_at = _clean(kpis), risks, utcnow()


def build_report(db: Database, kind: str, period: str, lang: str, formats: list[str], progress: Progress = None,
                 thresholds: Thresholds | None = None, as_of: dt.datetime | None = None, number: int | None = None,
                 issued_on: dt.date | None = None, issuer: Issuer | None = None) -> Built:
    """Compute and render. A period that has not ended by `as_of` (default: now) is covered up to
    `as_of` only and the result is provisional; nothing is counted for time that has not happened."""
    step = progress or (lambda _name: None)
    thresholds = thresholds or Thresholds.from_env()
    issuer = issuer or Issuer.from_env()
    as_of = as_of or utcnow()
    issued_on = issued_on or local_date(as_of)
    end = period_end(kind, period)
    if as_of <= (Month.parse(period).start if kind == "monthly" else Month(parse_year(period), 1).start):
        raise ReportInputError(f"period: {period} has not begun yet", f"Kỳ {period} chưa bắt đầu: chưa có gì để báo cáo.")
    bound = None if as_of >= end else as_of
    with _snapshot(db) as conn:
        if kind == "monthly":
            month = Month.parse(period)
            opts = MetricOptions(late_renewal_days=thresholds.late_renewal_days)
            current = compute_month(conn, month, opts, bound)
            step("month")
            prev_kpis, prev_risks = _previous_month(db, conn, month.previous, opts, thresholds)
            step("previous month")
            if bound is None:
                freeze_month(db, month, current.kpis, assessment.risks(current, thresholds))
            mom = month_over_month(current, SimpleNamespace(kpis=prev_kpis or {}))
            doc = monthly_document(current, prev_kpis, prev_risks, mom, lang, opts, thresholds, issuer, number, issued_on)
        else:
            year = compute_year(conn, parse_year(period), thresholds, progress=step, as_of=bound)
            doc = yearly_document(year, lang, thresholds, issuer, number, issued_on)
    step("document")
    out = {}
    for fmt in formats:
        out[fmt] = render.RENDERERS[fmt](doc)
        step(fmt)
    return Built(out, bound is not None, bound or end)


def build(db: Database, kind: str, period: str, lang: str, formats: list[str], progress: Progress = None,
          thresholds: Thresholds | None = None, as_of: dt.datetime | None = None, **kw) -> dict[str, bytes]:
    """{format: bytes}; see build_report."""
    return build_report(db, kind, period, lang, formats, progress, thresholds, as_of, **kw).outputs


def progress_steps(kind: str, formats: list[str], period: str | None = None, as_of: dt.datetime | None = None) -> int:
    """Steps build_report announces: a year counts only its months that have begun."""
    if kind == "monthly":
        computed = 2
    elif period is None:
        computed = 12
    else:
        now = as_of or utcnow()
        computed = sum(1 for m in range(1, 13) if Month(parse_year(period), m).start < now)
    return computed + 1 + len(formats)


def file_name(kind: str, period: str, lang: str, fmt: str) -> str:
    stem = "bao-cao-thang" if kind == "monthly" else "bao-cao-nam"
    if lang == "en":
        stem = "monthly-report" if kind == "monthly" else "yearly-assessment"
    return f"{stem}-{period}-{lang}.{render.EXTENSIONS[fmt]}"


def write_files(directory: Path, kind: str, period: str, lang: str, outputs: dict[str, bytes], relative_to: Path | None = None) -> dict:
    """Write atomically (temp file + rename: a reader never sees half a PDF); returns the files dict."""
    if relative_to is not None:
        for folder in (directory.parent.parent.parent, directory.parent.parent, directory.parent):
            private_dir(folder)
    files = {}
    for fmt, data in outputs.items():
        path = directory / file_name(kind, period, lang, fmt)
        # Inside the instance: 0600 in 0700 folders. A folder the user named keeps its mode.
        write_atomic(path, data, private_parent=relative_to is not None)
        shown = path.relative_to(relative_to) if relative_to else path
        files[fmt] = {"path": str(shown), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return files


# ------------------------------------------------------------------ rows
def report_dict(r: Report) -> dict:
    return {"id": r.id, "kind": r.kind, "period": r.period, "lang": r.lang, "formats": list(r.formats or []),
            "status": r.status, "created_at": iso(r.created_at), "created_by": r.created_by,
            "started_at": iso(r.started_at), "finished_at": iso(r.finished_at), "error": r.error,
            "provisional": bool(r.provisional), "until": iso(r.until), "number": r.number,
            "files": {fmt: {"sha256": f["sha256"], "size": f["size"], "url": f"/api/v1/reports/{r.id}/{fmt}"}
                      for fmt, f in sorted((r.files or {}).items())}}


def request_report(session: Session, kind: str, period: str, lang: str, formats: list[str], created_by: str,
                   regenerate: bool = False) -> tuple[Report, bool]:
    """The row for (kind, period, lang), created if missing. Returns (row, must_run).

    An existing finished report is reused unless formats are missing or regenerate is asked;
    then it is reset to pending (the formats become the union, so nothing offered before
    disappears). The unique constraint arbitrates concurrent first requests.
    """
    row = session.scalar(select(Report).where(Report.kind == kind, Report.period == period, Report.lang == lang))
    if row is None:
        row = Report(kind=kind, period=period, lang=lang, formats=formats, status="pending", created_by=created_by,
                     files={}, created_at=utcnow())
        try:
            with session.begin_nested():
                session.add(row)
            return row, True
        except IntegrityError:
            row = session.scalar(select(Report).where(Report.kind == kind, Report.period == period, Report.lang == lang))
    missing = [f for f in formats if f not in (row.formats or [])]
    if row.status in ("pending", "running"):
        return row, False
    # A provisional report is never reused: its figures move on until the period is over.
    if regenerate or missing or row.status == "failed" or row.provisional:
        union = [f for f in FORMATS if f in set(row.formats or []) | set(formats)]
        changed = session.execute(update(Report).where(Report.id == row.id, Report.status == row.status)
                                  .values(status="pending", formats=union, error=None, created_by=created_by)
                                  .execution_options(synchronize_session=False)).rowcount
        session.refresh(row)
        return row, changed == 1
    return row, False


def claim(db: Database, report_id: int, now: dt.datetime | None = None) -> int | None:
    """Compare-and-set pending/failed/stale-running → running; returns the new attempt or None."""
    now = now or utcnow()
    with db.session() as s:
        row = s.get(Report, report_id)
        if row is None:
            return None
        attempt = (row.attempt or 0) + 1
        claimable = or_(Report.status.in_(("pending", "failed")),
                        (Report.status == "running") & (Report.started_at < now - STALE_AFTER))
        ok = s.execute(update(Report).where(Report.id == report_id, Report.attempt == row.attempt, claimable)
                       .values(status="running", attempt=attempt, started_at=now, error=None)
                       .execution_options(synchronize_session=False)).rowcount
    return attempt if ok == 1 else None


def run_report(instance, report_id: int, progress: Progress = None) -> dict | None:
    """Claim and generate one report; safe to call from any process (a second caller steps back)."""
    db: Database = instance.database
    attempt = claim(db, report_id)
    if attempt is None:
        log.info("report %s is already being generated or done", report_id)
        return None
    with db.session() as s:
        row = s.get(Report, report_id)
        kind, period, lang, formats = row.kind, row.period, row.lang, list(row.formats)
    base = Path(instance.settings.instance_dir)
    now = utcnow()
    try:
        number, issued_on = None, None
        if now >= period_end(kind, period):  # final: the office's register gives it its number
            with db.session() as s:
                number, issued_at = register_number(s, kind, period, now)
            issued_on = local_date(issued_at)
        built = build_report(db, kind, period, lang, formats, progress, as_of=now, number=number, issued_on=issued_on)
        files = write_files(base / "reports" / kind / period / lang, kind, period, lang, built.outputs, relative_to=base)
        values = {"status": "done", "files": files, "finished_at": utcnow(), "error": None,
                  "provisional": built.provisional, "until": built.until, "number": number}
    except OSError as exc:  # a full or read-only disk: said so, no file claimed (each write is atomic)
        log.error("report %s (%s %s %s): cannot write its files: %s", report_id, kind, period, lang, exc)
        values = {"status": "failed", "finished_at": utcnow(),
                  "error": f"cannot write the report files ({exc.strerror or type(exc).__name__}): the disk is full "
                           f"or the reports folder is read-only"[:2000]}
    except Exception as exc:  # recorded on the row: the API shows why, the job may retry
        log.exception("report %s (%s %s %s) failed", report_id, kind, period, lang)
        values = {"status": "failed", "finished_at": utcnow(), "error": f"{type(exc).__name__}: {exc}"[:2000]}
    with db.session() as s:
        s.execute(update(Report).where(Report.id == report_id, Report.attempt == attempt).values(**values)
                  .execution_options(synchronize_session=False))
        row = s.get(Report, report_id)
        return report_dict(row)


def start_background(dispatcher, report_id: int) -> None:
    """Generation can take minutes: it runs as the background task reports.generate (Celery
    with a broker, the embedded dispatcher otherwise)."""
    dispatcher.submit("reports.generate", int(report_id))


# ------------------------------------------------------------------ the monthly schedule
def auto_langs() -> list[str]:
    langs = [x.strip() for x in os.environ.get("IPAD_MDM_REPORT_AUTO_LANGS", "vi").split(",") if x.strip()]
    return [x for x in langs if x in LANGS] or ["vi"]


def auto_delay() -> dt.timedelta:
    """Wait this long after local midnight on the 1st, so the last scheduled compliance
    evaluations of the month (every 5 minutes) have landed before the month is frozen."""
    return dt.timedelta(hours=float(os.environ.get("IPAD_MDM_REPORT_AUTO_DELAY_HOURS", "1")))


def ensure_previous_month(instance, now: dt.datetime) -> list[dict]:
    """Create (once, across processes) and generate last month's report(s). Returns what ran."""
    month = Month.containing(now).previous
    if now < month.end + auto_delay():
        return []
    ran = []
    for lang in auto_langs():
        with instance.database.session() as s:
            row, must_run = request_report(s, "monthly", str(month), lang, list(FORMATS), "schedule")
            report_id, status, started = row.id, row.status, row.started_at
        stale = status == "running" and started is not None and started < now - STALE_AFTER
        if must_run or status == "pending" or stale:
            result = run_report(instance, report_id)
            if result:
                ran.append(result)
    return ran
