"""Celery for production (composition root): the worker's app, every package's background
tasks and the beat schedule of every periodic job.

The embedded default (`ipad-mdm serve` without CELERY_BROKER_URL) needs none of this: its
EmbeddedScheduler thread runs the same periodic jobs and its BackgroundDispatcher threads
the same background tasks, in-process. With a broker:

    export CELERY_BROKER_URL=redis://127.0.0.1:6379/0       # required
    export CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/1   # optional (default: no results)
    export DATABASE_URL=postgresql+psycopg://mdm@db/ipad_mdm IPAD_MDM_INSTANCE=/srv/ipad-mdm
    celery -A ipad_mdm.tasks worker --loglevel=INFO --concurrency=4
    celery -A ipad_mdm.tasks beat   --loglevel=INFO      # exactly ONE beat process

Every task registered with @background_task is a Celery task of the same name (for example
`mdm.send_pushes`, `compliance.evaluate_device`, `reports.generate`); beat enqueues
`ipad_mdm.run_periodic_job(name)` for every @periodic job at its interval. The tasks one committed
transaction asks for travel as one message, `ipad_mdm.run_batch([[name, args], …])`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from celery import signals

from . import packages
from .celery_app import make_celery
from .dispatch import BATCH_TASK
from .jobs import job, registered_jobs, registered_tasks

log = logging.getLogger("ipad_mdm.tasks")

PERIODIC_TASK = "ipad_mdm.run_periodic_job"


class WorkerRuntime:
    """The Runtime (instance, hooks, dispatcher) of this worker process, built once per pid."""

    _lock = threading.Lock()
    _value = None

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._value is None or cls._value[1] != os.getpid():
                from .app import create_app
                from .config import load_settings
                from .dispatch import CeleryDispatcher
                from .instance import open_instance

                inst = open_instance(load_settings())
                flask_app = create_app(inst=inst, dispatcher=CeleryDispatcher(app))
                cls._value = (flask_app.extensions["ipad_mdm.runtime"], os.getpid())
            return cls._value[0]


def _warm_runtime() -> None:
    """Build this worker process's runtime now, in a thread, not in its first task: that task would
    otherwise carry the app's whole start (about a second), a push delayed by it. The first task waits
    on WorkerRuntime's lock if it comes sooner; a failure here is retried by that task."""
    def build():
        try:
            WorkerRuntime.get()
            log.info("worker runtime ready (pid %d)", os.getpid())
        except Exception:
            log.exception("building the worker runtime at start failed; the first task tries again")

    threading.Thread(target=build, name="ipad-mdm-warm", daemon=True).start()


@signals.worker_process_init.connect(weak=False)
def _warm_pool_process(**_):
    _warm_runtime()  # each prefork child, or the solo pool's one process


@signals.worker_ready.connect(weak=False)
def _warm_thread_pool(sender=None, **_):
    if type(getattr(sender, "pool", None)).__module__.endswith(".thread"):
        _warm_runtime()  # the thread pool runs tasks in the worker's own process: no init signal


def beat_schedule() -> dict:
    return {
        j.name: {
            "task": PERIODIC_TASK,
            "schedule": float(j.interval_seconds),
            "args": (j.name,),
            # A job that could not start within one interval is superseded by the next one.
            "options": {"expires": float(j.interval_seconds)},
        }
        for j in registered_jobs()
    }


def _json_safe(result):
    return result if isinstance(result, (dict, list, int, str, type(None))) else None


def _register(celery, name: str, run) -> None:
    @celery.task(name=name)
    def runner(*args):
        return _json_safe(run(WorkerRuntime.get(), *args))


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _batch_pool() -> ThreadPoolExecutor:
    """This worker process's threads for a batch's entries (made again after a fork)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=8, thread_name_prefix="ipad-mdm-batch"))
        return _pool[1]


def _run_entry(runtime, tasks, name: str, args) -> None:
    background = tasks.get(name)
    if background is None:
        log.error("unknown background task %s in a batch", name)
        return
    log.info("running %s (batched)", name)
    started = time.monotonic()
    try:
        background.run(runtime, *args)
    except Exception:
        log.exception("background task %s failed", name)
    else:
        log.info("%s (batched) done in %.3fs", name, time.monotonic() - started)


def build_app():
    celery = make_celery()
    packages.load_jobs()
    for name, background in registered_tasks().items():
        _register(celery, name, background.run)

    @celery.task(name=BATCH_TASK)
    def run_batch(entries):
        # One committed transaction's tasks (CeleryDispatcher.batched), side by side as separate
        # messages would have run: a slow one (APNs, a webhook receiver) must not hold back another
        # (a revoked peer's removal from the VPN interface). One that fails does not stop the others.
        runtime, tasks = WorkerRuntime.get(), registered_tasks()
        pool = _batch_pool()
        others = [pool.submit(_run_entry, runtime, tasks, name, args) for name, args in entries[1:]]
        if entries:
            _run_entry(runtime, tasks, *entries[0])
        for future in others:
            future.result()

    @celery.task(name=PERIODIC_TASK)
    def run_periodic_job(name: str):
        found = job(name)
        if found is None:
            log.error("unknown periodic job %s", name)
            return None
        return _json_safe(found.run(WorkerRuntime.get()))

    celery.conf.beat_schedule = beat_schedule()
    return celery


app = build_app()
celery = app  # `celery -A ipad_mdm.tasks` finds `app` or `celery`
