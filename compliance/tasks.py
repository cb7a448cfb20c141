"""Celery for production: compliance tasks and the beat schedule of every periodic job.

The embedded default (`ipad-mdm serve`) needs none of this: its EmbeddedScheduler
thread runs the same `ipad_mdm.jobs` in-process. With a broker, run:

    export CELERY_BROKER_URL=redis://127.0.0.1:6379/0       # required
    export CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/1   # optional (default: no results)
    export DATABASE_URL=postgresql+psycopg://mdm@db/ipad_mdm IPAD_MDM_INSTANCE=/srv/ipad-mdm
    celery -A compliance.tasks worker --loglevel=INFO --concurrency=4
    celery -A compliance.tasks beat   --loglevel=INFO      # exactly ONE beat process

Beat enqueues `compliance.run_periodic_job(name)` for every job in
`ipad_mdm.jobs.all_jobs()` at its interval (mdm.retry_pushes, compliance.evaluate_all,
compliance.request_inventory, ...). When beat is used, do not also start the
embedded scheduler, or each job runs twice (harmless for compliance - transitions
are guarded by row locks - but wasteful).

The worker builds the same application as the web process (create_app), so the
`verdict.changed` subscribers (VPN) are registered in the worker too, and pushes
go straight to APNs from the worker.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading

from celery import Celery

log = logging.getLogger("compliance.tasks")


def beat_schedule() -> dict:
    from ipad_mdm.jobs import all_jobs

    return {
        job.name: {
            "task": "compliance.run_periodic_job",
            "schedule": float(job.interval_seconds),
            "args": (job.name,),
            # A job that could not start within one interval is superseded by the next one.
            "options": {"expires": float(job.interval_seconds)},
        }
        for job in all_jobs()
    }


def make_celery(broker_url: str | None = None, result_backend: str | None = None) -> Celery:
    """The Celery app; broker from CELERY_BROKER_URL unless given."""
    broker_url = broker_url or os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
    result_backend = result_backend or os.environ.get("CELERY_RESULT_BACKEND") or None
    app = Celery("ipad_mdm", broker=broker_url, backend=result_backend)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        timezone="UTC", enable_utc=True,
        # A task is acknowledged after it ran: a worker killed mid-evaluation leaves it
        # for another worker. Evaluations are idempotent, so a rerun is safe.
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
        task_default_queue=os.environ.get("IPAD_MDM_CELERY_QUEUE", "ipad-mdm"),
    )
    app.conf.beat_schedule = beat_schedule()
    return app


app = make_celery()
celery = app  # `celery -A compliance.tasks` finds `app` or `celery`


# ------------------------------------------------------------------ worker runtime
class _Runtime:
    """Instance + hooks + dispatcher, built once per worker process on first use."""

    _lock = threading.Lock()
    _value = None

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._value is None:
                cls._value = cls._build()
            return cls._value

    @staticmethod
    def _build():
        from ipad_mdm.app import create_app, make_apns_client
        from ipad_mdm.config import load_settings
        from ipad_mdm.instance import open_instance
        from mdm.push import BackgroundPusher, PushSender

        inst = open_instance(load_settings())
        dispatcher = BackgroundPusher(PushSender(inst.database, lambda: make_apns_client(inst)))
        flask_app = create_app(inst=inst, dispatcher=dispatcher)
        return inst, flask_app.extensions["ipad_mdm.hooks"], dispatcher


def _now(now_iso: str | None) -> dt.datetime | None:
    if not now_iso:
        return None
    value = dt.datetime.fromisoformat(now_iso)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@app.task(name="compliance.evaluate_device")
def evaluate_device(device_id: int, now_iso: str | None = None) -> dict:
    """Evaluate one device; returns {"device_id", "state", "transitions"}."""
    from mdm.models import Device

    from . import engine

    inst, hooks, dispatcher = _Runtime.get()
    with inst.database.session() as s:
        device = s.get(Device, device_id)
        if device is None:
            return {"device_id": device_id, "state": None, "transitions": 0}
        res = engine.evaluate_device(s, hooks, device, _now(now_iso), trigger="task")
    if res.push_needed:
        dispatcher.request_push([device_id])
    return {"device_id": device_id, "state": res.state, "transitions": [t.to_state for t in res.transitions]}


@app.task(name="compliance.evaluate_all")
def evaluate_all(now_iso: str | None = None) -> dict:
    from . import engine

    inst, hooks, dispatcher = _Runtime.get()
    counts = engine.evaluate_all(inst.database, hooks, _now(now_iso))
    push_ids = counts.pop("push_device_ids", [])
    if push_ids:
        dispatcher.request_push(push_ids)
    return counts


@app.task(name="compliance.request_inventory")
def request_inventory() -> list[int]:
    from . import jobs

    inst, _hooks, dispatcher = _Runtime.get()
    return jobs.request_inventory(inst, dispatcher)


@app.task(name="compliance.run_periodic_job")
def run_periodic_job(name: str):
    """What beat schedules: any job declared with @periodic, by name."""
    from ipad_mdm.jobs import all_jobs

    inst, _hooks, dispatcher = _Runtime.get()
    job = next((j for j in all_jobs() if j.name == name), None)
    if job is None:
        log.error("unknown periodic job %s", name)
        return None
    result = job.run(inst, dispatcher)
    return result if isinstance(result, (dict, list, int, str, type(None))) else None
