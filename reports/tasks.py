"""Celery task for report generation (used when CELERY_BROKER_URL is set).

`shared_task` binds to whichever Celery app the process builds, so this works although
ipad_mdm.tasks (owned by the core) does not import it by name: it is imported via
reports.jobs, which ipad_mdm.tasks loads while building the beat schedule.
"""
from __future__ import annotations

from celery import shared_task

GENERATE_TASK = "reports.generate"


@shared_task(name=GENERATE_TASK)
def generate(report_id: int):
    from ipad_mdm.tasks import Runtime

    from . import service

    inst = Runtime.get()[0]
    return service.run_report(inst, int(report_id))


def enqueue(report_id: int) -> None:
    from ipad_mdm.tasks import app

    app.send_task(GENERATE_TASK, args=[int(report_id)])
