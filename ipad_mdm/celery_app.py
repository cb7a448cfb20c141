"""The Celery application object (core): broker settings only, no tasks.

The composition root (ipad_mdm.tasks) registers every package's background tasks and
periodic jobs on it; web processes only need it to send tasks (ipad_mdm.dispatch).
"""
from __future__ import annotations

import functools
import os

from celery import Celery


def make_celery(broker_url: str | None = None, result_backend: str | None = None) -> Celery:
    """A Celery app; broker from CELERY_BROKER_URL unless given."""
    broker_url = broker_url or os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
    result_backend = result_backend or os.environ.get("CELERY_RESULT_BACKEND") or None
    app = Celery("ipad_mdm", broker=broker_url, backend=result_backend)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        timezone="UTC", enable_utc=True,
        # Acknowledged after it ran: a worker killed mid-task leaves it for another
        # worker. Every task here is idempotent, so a rerun is safe.
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
        task_default_queue=os.environ.get("IPAD_MDM_CELERY_QUEUE", "ipad-mdm"),
    )
    prefix = os.environ.get("IPAD_MDM_REDIS_KEY_PREFIX")
    if prefix:
        # Several deployments (or test runs) on one Redis never see each other's keys.
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
        app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
    return app


@functools.lru_cache(maxsize=1)
def celery_app() -> Celery:
    """The process's Celery app for sending tasks (built on first use)."""
    return make_celery()
