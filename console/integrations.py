"""The console's calls into the reports and document_gateway packages, in one place.

The console never computes a report or decides a document's visibility itself: it calls those
packages' public functions. Keeping the calls here means a change in their interface is one edit.
"""
from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.refusal import Refusal

log = logging.getLogger("console.integrations")

KINDS = ("monthly", "yearly")
FORMATS = ("pdf", "html", "xlsx", "csv")
MIMETYPES = {"pdf": "application/pdf", "html": "text/html", "csv": "text/csv",
             "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


class ReportRequestError(Refusal):
    pass


def previous_month() -> str:
    today = dt.date.today().replace(day=1) - dt.timedelta(days=1)
    return f"{today.year:04d}-{today.month:02d}"


# ------------------------------------------------------------------ reports
def _report_model():
    from reports import Report

    return Report


def list_reports(session: Session, limit: int = 100) -> list:
    Report = _report_model()
    return list(session.scalars(select(Report).order_by(Report.id.desc()).limit(limit)))


def report_info(session: Session, report_id: int) -> dict | None:
    report = session.get(_report_model(), report_id)
    if report is None:
        return None
    return {"id": report.id, "kind": report.kind, "period": report.period, "lang": report.lang,
            "status": report.status, "error": report.error, "provisional": bool(report.provisional),
            "number": report.number,
            "formats": sorted((report.files or {}).keys()),
            "started_at": report.started_at.isoformat() if report.started_at else None,
            "finished_at": report.finished_at.isoformat() if report.finished_at else None}


def start_generation(instance, dispatcher, *, kind: str, period: str, lang: str, formats: list[str], by: str,
                     regenerate: bool = False) -> int:
    """Ask the reports package for a report and start it in the background (its Celery task or thread);
    returns the Report id whose status the browser polls. Same calls as POST /api/v1/reports."""
    from reports import service as rservice

    try:
        kind, period, lang, formats = rservice.normalise(kind, period, lang, formats)
    except rservice.ReportInputError as exc:
        raise ReportRequestError(str(exc), exc.vi) from None
    with instance.database.session() as s:
        row, must_run = rservice.request_report(s, kind, period, lang, formats, by, regenerate=regenerate)
        report_id = row.id
    if must_run:
        rservice.start_background(dispatcher, report_id)
    return report_id


def report_file(session: Session, instance, report_id: int, fmt: str) -> tuple[Path, str, str] | None:
    report = session.get(_report_model(), report_id)
    if report is None or report.status != "done" or fmt not in (report.files or {}):
        return None
    rel = report.files[fmt]["path"]
    root = Path(instance.settings.instance_dir).resolve()
    path = (root / rel).resolve()
    if root not in path.parents or not path.is_file():  # never serve outside the instance folder
        return None
    name = path.name
    return path, MIMETYPES.get(fmt, "application/octet-stream"), name


# ------------------------------------------------------------------ documents
def can_set_classification() -> bool:
    from document_gateway import service as gw

    return hasattr(gw, "set_classification")


def set_classification(session: Session, doc, classification: str, *, by: str) -> None:
    from document_gateway import service as gw

    if not can_set_classification():
        raise gw.GatewayError("changing a document's classification is not available", 501,
                              vi="Chưa hỗ trợ đổi mức độ mật của tài liệu.")
    gw.set_classification(session, doc, classification, by=by)


def withdraw_document(session: Session, doc, *, by: str) -> None:
    """Same effect as the gateway API's DELETE: kept for the audit trail, never served again."""
    from document_gateway import service as gw

    if hasattr(gw, "withdraw_document"):
        gw.withdraw_document(session, doc, by=by)
        return
    if doc.withdrawn_at is None:
        doc.withdrawn_at = utcnow()
        log.info("document %s withdrawn by %s", doc.public_id, by)
