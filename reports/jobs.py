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
