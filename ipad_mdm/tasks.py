"""Celery for production: the app, the beat schedule of every periodic job, pushes.

The embedded default (`ipad-mdm serve` without CELERY_BROKER_URL) needs none of
this: its EmbeddedScheduler thread runs the same `ipad_mdm.jobs` in-process and
a BackgroundPusher thread sends pushes. With a broker:

    export CELERY_BROKER_URL=redis://127.0.0.1:6379/0       # required
    export CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/1   # optional (default: no results)
    export DATABASE_URL=postgresql+psycopg://mdm@db/ipad_mdm IPAD_MDM_INSTANCE=/srv/ipad-mdm
    celery -A ipad_mdm.tasks worker --loglevel=INFO --concurrency=4
    celery -A ipad_mdm.tasks beat   --loglevel=INFO      # exactly ONE beat process

Beat enqueues `ipad_mdm.run_periodic_job(name)` for every job in
`ipad_mdm.jobs.all_jobs()` at its interval. The web processes then do not run
the embedded scheduler (serve skips it when a broker is configured).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading

from celery import Celery

log = logging.getLogger("ipad_mdm.tasks")

PERIODIC_TASK = "ipad_mdm.run_periodic_job"
PUSH_TASK = "mdm.send_pushes"


def beat_schedule() -> dict:
    from .jobs import all_jobs

    return {
        job.name: {
            "task": PERIODIC_TASK,
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
    celery_app = Celery("ipad_mdm", broker=broker_url, backend=result_backend)
    celery_app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        timezone="UTC", enable_utc=True,
        # Acknowledged after it ran: a worker killed mid-task leaves it for another
        # worker. Every task here is idempotent, so a rerun is safe.
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
        task_default_queue=os.environ.get("IPAD_MDM_CELERY_QUEUE", "ipad-mdm"),
    )
    celery_app.conf.beat_schedule = beat_schedule()
    return celery_app


app = make_celery()
celery = app  # `celery -A ipad_mdm.tasks` finds `app` or `celery`


class CeleryDispatcher:
    """Web processes hand pushes to the workers (after their transaction commits)."""

    def __init__(self, celery_app: Celery | None = None, queue: str | None = None):
        self._app = celery_app or app
        self._queue = queue

    def request_push(self, device_ids) -> None:
        ids = sorted({int(i) for i in device_ids})
        if ids:
            options = {"queue": self._queue} if self._queue else {}
            self._app.send_task(PUSH_TASK, args=[ids], **options)


class Runtime:
    """Instance, hooks, push sender and dispatcher, built once per worker process."""

    _lock = threading.Lock()
    _value = None

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._value is None or cls._value[4] != os.getpid():
                cls._value = cls._build()
            return cls._value[:4]

    @staticmethod
    def _build():
        from mdm.push import PushSender

        from .app import create_app, make_apns_client
        from .config import load_settings
        from .instance import open_instance

        inst = open_instance(load_settings())
        sender = PushSender(inst.database, lambda: make_apns_client(inst))
        dispatcher = CeleryDispatcher()
        flask_app = create_app(inst=inst, dispatcher=dispatcher)
        return inst, flask_app.extensions["ipad_mdm.hooks"], dispatcher, sender, os.getpid()


def parse_now(now_iso: str | None) -> dt.datetime | None:
    if not now_iso:
        return None
    value = dt.datetime.fromisoformat(now_iso)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@app.task(name=PUSH_TASK)
def send_pushes(device_ids: list[int]) -> dict:
    """Push the given devices; a failure stays `push_pending` for the retry job."""
    _inst, _hooks, _dispatcher, sender = Runtime.get()
    outcome = sender.push(device_ids)
    return {str(k): v for k, v in outcome.items()}


@app.task(name=PERIODIC_TASK)
def run_periodic_job(name: str):
    """What beat schedules: any job declared with @periodic, by name."""
    from .jobs import all_jobs

    inst, _hooks, dispatcher, _sender = Runtime.get()
    job = next((j for j in all_jobs() if j.name == name), None)
    if job is None:
        log.error("unknown periodic job %s", name)
        return None
    result = job.run(inst, dispatcher)
    return result if isinstance(result, (dict, list, int, str, type(None))) else None


# Register every package's tasks on this app (the worker imports only this module).
import compliance.tasks  # noqa: E402,F401
import reports.tasks  # noqa: E402,F401
