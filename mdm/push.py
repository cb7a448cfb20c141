"""Waking devices: APNs pushes for devices with queued commands.

A push only asks the device to connect; the commands themselves stay in the
database. A failed push leaves `push_pending` set and is retried with
backoff by `retry_due_pushes` (Celery beat in production, a timer in the
embedded server), so an APNs outage loses nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from typing import Callable, Iterable

from sqlalchemy import select

from ipad_mdm.db import Database, utcnow

from .models import Device

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600


def retry_delay(failures: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * (2 ** max(0, failures - 1))))


class PushSender:
    """Sends pushes for given devices and records the outcome on each device row."""

    def __init__(self, database: Database, client_factory: Callable):
        self._database = database
        self._client_factory = client_factory
        self._client = None
        self._lock = threading.Lock()

    def _apns(self):
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def push(self, device_ids: Iterable[int]) -> dict[int, bool]:
        ids = sorted(set(device_ids))
        if not ids:
            return {}
        with self._database.session() as s:
            targets = [
                (d.id, d.push_token, d.push_magic)
                for d in s.scalars(select(Device).where(Device.id.in_(ids)))
                if d.push_token and d.push_magic and d.enrollment_state == "enrolled"
            ]
        outcome: dict[int, bool] = {}
        client = self._apns()
        for device_id, token, magic in targets:
            try:
                result = client.push(token, magic)
                ok, error = result.ok, (None if result.ok else f"{result.status_code} {result.reason or ''}".strip())
                unregistered = getattr(result, "token_unregistered", False)
            except Exception as exc:  # network layer gave up: keep pending, retry later
                ok, error, unregistered = False, type(exc).__name__, False
            outcome[device_id] = ok
            with self._database.session() as s:
                d = s.get(Device, device_id)
                if d is None:
                    continue
                d.last_push_at = utcnow()
                if ok:
                    d.push_pending = False
                    d.push_failures = 0
                    d.last_push_error = None
                else:
                    d.push_failures += 1
                    d.last_push_error = (error or "push failed")[:255]
                    if unregistered:
                        # APNs says the token is dead: wait for a new TokenUpdate.
                        d.push_pending = False
                        d.push_token = None
            if not ok:
                log.warning("push to device %s failed: %s", device_id, error)
        return outcome

    def close(self) -> None:
        with self._lock:
            if self._client is not None and hasattr(self._client, "close"):
                self._client.close()
            self._client = None


def due_for_retry(database: Database, now: dt.datetime | None = None) -> list[int]:
    now = now or utcnow()
    with database.session() as s:
        rows = s.execute(
            select(Device.id, Device.push_failures, Device.last_push_at).where(
                Device.push_pending.is_(True), Device.push_token.is_not(None), Device.enrollment_state == "enrolled"
            )
        ).all()
    return [i for i, failures, last in rows if last is None or failures == 0 or last + retry_delay(failures) <= now]


class BackgroundPusher:
    """Embedded-default dispatcher: a daemon thread sends pushes after commit."""

    def __init__(self, sender: PushSender):
        self._sender = sender
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="apns-pusher", daemon=True)
        self._started = False
        self._start_lock = threading.Lock()
        self._idle = threading.Condition()
        self._pending = 0

    def request_push(self, device_ids: Iterable[int]) -> None:
        ids = list(device_ids)
        if not ids:
            return
        with self._start_lock:
            if not self._started:
                self._thread.start()
                self._started = True
        with self._idle:
            self._pending += 1
        self._queue.put(ids)

    def _run(self) -> None:
        while True:
            ids = self._queue.get()
            try:
                self._sender.push(ids)
            except Exception:
                log.exception("push dispatch failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def close(self) -> None:
        """Drop the APNs connection (shutdown, tests)."""
        self._sender.close()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests and shutdown: wait until every requested push was attempted."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)
