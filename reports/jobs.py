"""Periodic report work (embedded scheduler or Celery beat)."""
from __future__ import annotations

import logging

from ipad_mdm.db import utcnow
from ipad_mdm.jobs import periodic

from . import service

log = logging.getLogger("reports.jobs")

# Importing the tasks module here registers the Celery task on the worker: ipad_mdm.tasks
# loads every job module while it builds the beat schedule.
from . import tasks  # noqa: F401


@periodic("reports.monthly_previous", 900)
def monthly_previous(instance, dispatcher) -> list:
    """On the 1st (and any later run until it exists) make last month's report.

    Idempotent across processes: the (kind, period, lang) unique constraint decides who
    creates the row, the status compare-and-set who generates it; a finished report is
    never regenerated here. The clock is read only here — computations get the month."""
    ran = service.ensure_previous_month(instance, utcnow())
    if ran:
        log.info("reports.monthly_previous generated %s", [(r["period"], r["lang"], r["status"]) for r in ran])
    return [r["id"] for r in ran]
