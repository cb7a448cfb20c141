"""Embedded scheduler: runs the registered periodic jobs in a daemon thread (no Celery beat)."""
from __future__ import annotations

import logging
import threading
import time

from .jobs import registered_jobs

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    def __init__(self, app, tick_seconds: float = 5.0):
        self._app = app
        self._tick = tick_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ipad-mdm-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        runtime = self._app.extensions["ipad_mdm.runtime"]
        due: dict[str, float] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for job in registered_jobs():
                if due.get(job.name, 0) <= now:
                    due[job.name] = now + job.interval_seconds
                    try:
                        job.run(runtime)
                    except Exception:
                        log.exception("periodic job %s failed", job.name)
            self._stop.wait(self._tick)
