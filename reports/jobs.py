"""Periodic report work (embedded scheduler or Celery beat)."""
from __future__ import annotations

import logging

from ipad_mdm.db import utcnow
from ipad_mdm.jobs import background_task, periodic

from . import service

log = logging.getLogger("reports.jobs")
GENERATE_TASK = "reports.generate"


@background_task(GENERATE_TASK)
def generate(rt, report_id: int):
    """Generate one requested report (minutes for a large office): off the request path."""
    return service.run_report(rt.instance, int(report_id))


@periodic("reports.monthly_previous", 900)
def monthly_previous(rt) -> list:
    """On the 1st (and any later run until it exists) make last month's report.

    Idempotent across processes: the (kind, period, lang) unique constraint decides who
    creates the row, the status compare-and-set who generates it; a finished report is
    never regenerated here. The clock is read only here — computations get the month."""
    ran = service.ensure_previous_month(rt.instance, utcnow())
    if ran:
        log.info("reports.monthly_previous generated %s", [(r["period"], r["lang"], r["status"]) for r in ran])
    return [r["id"] for r in ran]


@periodic("reports.run_waiting", 300)
def run_waiting(rt) -> list:
    """Reports requested but never started (the task queue was unavailable when they were asked
    for, or the worker died before claiming them) are generated here; claim() lets one run each."""
    import datetime as dt

    from sqlalchemy import select

    from .models import Report

    with rt.instance.database.session() as s:
        ids = list(s.scalars(select(Report.id).where(Report.status == "pending", Report.started_at.is_(None),
                                                     Report.created_at < utcnow() - dt.timedelta(minutes=5))
                            .order_by(Report.id).limit(20)))
    return [r["id"] for r in (service.run_report(rt.instance, i) for i in ids) if r]
