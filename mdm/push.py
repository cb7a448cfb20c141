"""Waking devices: APNs pushes for devices with queued commands.

A push only asks the device to connect; the commands themselves stay in the
database. Pushes run as the background task `mdm.send_pushes` (Celery in
production, the embedded dispatcher's threads otherwise). A failed push leaves
`push_pending` set and is retried with backoff by the `mdm.retry_pushes` job,
so an APNs outage loses nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Callable, Iterable, NamedTuple

from sqlalchemy import select, update

from ipad_mdm.db import Database, utcnow
from ipad_mdm.jobs import background_task

from .models import Device
from .pushcert import service as pushcert
from .pushcert.certificate import classify

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600


def retry_delay(failures: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * (2 ** max(0, failures - 1))))


class PushSender:
    """Sends pushes for given devices and records the outcome on each device row."""

    def __init__(self, database: Database, client_factory: Callable, instance=None):
        self._database = database
        self._client_factory = client_factory
        self._client = None
        self._client_fingerprint = None
        self._lock = threading.Lock()
        # With the instance, the push certificate is watched: a renewal installed by another process is
        # picked up, and what APNs says about the certificate is shared by every process (mdm.pushcert).
        self._instance = instance

    def _apns(self, fingerprint: str | None = None):
        with self._lock:
            if self._client is not None and fingerprint != self._client_fingerprint:
                if hasattr(self._client, "close"):  # a renewed certificate: a new TLS identity
                    self._client.close()
                self._client = None
            if self._client is None:
                self._client = self._client_factory()
                self._client_fingerprint = fingerprint
            return self._client

    def push(self, device_ids: Iterable[int]) -> dict[int, bool]:
        ids = sorted(set(device_ids))
        if not ids:
            return {}
        info = pushcert.current(self._instance) if self._instance is not None else None
        with self._database.session() as s:
            targets = [
                (i, token, magic) for i, token, magic in s.execute(
                    select(Device.id, Device.push_token, Device.push_magic)
                    .where(Device.id.in_(ids), Device.enrollment_state == "enrolled").order_by(Device.id))
                if token and magic
            ]
            held = pushcert.blocked(s, info) if info is not None else None
        if held:
            # Pending, not tried, no failure counted: the iPads are not at fault.
            _mark_devices(self._database, [t[0] for t in targets], f"{PUSH_BLOCKED}{held}")
            return {t[0]: False for t in targets}
        client = self._apns(info.fingerprint if info else None)
        outcome: dict[int, bool] = {}
        sent: list[_Sent] = []
        any_ok, topic_refused = False, None
        for index, (device_id, token, magic) in enumerate(targets):
            kind = None
            try:
                result = client.push(token, magic)
                ok, error = result.ok, (None if result.ok else f"{result.status_code} {result.reason or ''}".strip())
                unregistered = getattr(result, "token_unregistered", False)
                if not ok and info is not None:
                    kind = classify(result.status_code, result.reason,
                                    result.reason if result.status_code is None else None)
            except Exception as exc:  # network layer gave up: keep pending, retry later
                ok, error, unregistered = False, type(exc).__name__, False
            outcome[device_id] = ok
            any_ok = any_ok or ok
            if kind == "certificate":
                # Apple refuses the certificate itself: every other push would fail the same way
                # (the answers before this one are recorded after the loop).
                with self._database.session() as s:
                    pushcert.record_refusal(s, info, "certificate", result.reason or error)
                rest = [t[0] for t in targets[index:]]
                _mark_devices(self._database, rest, f"{PUSH_BLOCKED}certificate_rejected")
                outcome.update({i: False for i in rest})
                log.error("push certificate refused by APNs (%s): %d push(es) held", error, len(rest))
                break
            if kind == "topic" and topic_refused is None:
                topic_refused = result.reason
            sent.append(_Sent(device_id, token, ok, error, unregistered))
            if not ok:
                log.warning("push to device %s failed: %s", device_id, error)
            if len(sent) >= RECORD_EVERY:
                _record(self._database, sent)
                sent = []
        _record(self._database, sent)
        if info is not None and (any_ok or topic_refused):
            # What the batch said about the certificate, once (not a state row read per push).
            with self._database.session() as s:
                if any_ok:
                    pushcert.record_success(s, info)
                if topic_refused:
                    pushcert.record_refusal(s, info, "topic", topic_refused)
        return outcome

    def close(self) -> None:
        with self._lock:
            if self._client is not None and hasattr(self._client, "close"):
                self._client.close()
            self._client = None


class _Sent(NamedTuple):
    device_id: int
    token: str
    ok: bool
    error: str | None
    unregistered: bool


RECORD_EVERY = 200  # pushes recorded per transaction: a large wave keeps its progress if the process dies


def _record(database: Database, sent: list[_Sent]) -> None:
    """What APNs answered, on the device rows: one statement for the pushes it accepted, one per refusal.
    A device whose push succeeded is no longer pending; a refused one counts a failure (the retry job's
    backoff) and says why; a token APNs calls dead is dropped unless a TokenUpdate replaced it meanwhile."""
    if not sent:
        return
    now = utcnow()
    accepted = [p.device_id for p in sent if p.ok]
    with database.session() as s:
        if accepted:
            s.execute(update(Device).where(Device.id.in_(accepted))
                      .values(last_push_at=now, push_pending=False, push_failures=0, last_push_error=None)
                      .execution_options(synchronize_session=False))
        for p in sent:
            if p.ok:
                continue
            s.execute(update(Device).where(Device.id == p.device_id)
                      .values(last_push_at=now, push_failures=Device.push_failures + 1,
                              last_push_error=(p.error or "push failed")[:255])
                      .execution_options(synchronize_session=False))
            if p.unregistered:
                # APNs says the token is dead: wait for a new TokenUpdate.
                s.execute(update(Device).where(Device.id == p.device_id, Device.push_token == p.token)
                          .values(push_pending=False, push_token=None)
                          .execution_options(synchronize_session=False))


def due_for_retry(database: Database, now: dt.datetime | None = None) -> list[int]:
    now = now or utcnow()
    with database.session() as s:
        rows = s.execute(
            select(Device.id, Device.push_failures, Device.last_push_at).where(
                Device.push_pending.is_(True), Device.push_token.is_not(None), Device.enrollment_state == "enrolled"
            )
        ).all()
    return [i for i, failures, last in rows if last is None or failures == 0 or last + retry_delay(failures) <= now]


def apns_client(instance):
    """The APNs HTTP/2 client for this instance's push certificate."""
    from .apns import APNsClient, PushCredentials

    s = instance.settings
    creds = PushCredentials.from_files(instance.push_cert_path, instance.push_key_path)
    return APNsClient(s.apns_url, creds, timeout=s.apns_timeout_seconds, max_attempts=s.apns_max_attempts,
                      verify=s.apns_ca_file or True)


PUSHES_OFF = "pushes_off_demo"  # last_push_error of a device whose push was not even tried
PUSH_BLOCKED = "held:"  # + why (certificate_rejected, expired): pending, not tried, not the iPad's fault
_told_off = threading.Event()


def _pushes_off(database: Database, device_ids: list[int], reason: str) -> dict:
    """Demo mode: say so once per process, leave the devices' pushes pending (a real push
    certificate installed later wakes them) and record why nothing was sent. No network."""
    if not _told_off.is_set():
        _told_off.set()
        log.warning("Apple push notifications are off (%s: no Apple MDM push certificate is configured, "
                    "IPAD_MDM_PUSH_CERT / IPAD_MDM_PUSH_KEY). Commands are queued and reach an iPad when it "
                    "next checks in by itself.", reason)
    _mark_devices(database, sorted(set(device_ids)), PUSHES_OFF)
    return {str(i): False for i in device_ids}


def _mark_devices(database: Database, device_ids: list[int], why: str) -> None:
    """Say on each device why its push was not sent; it stays pending and no failure is counted."""
    with database.session() as s:
        for d in s.scalars(select(Device).where(Device.id.in_(device_ids))):
            d.last_push_error = why


@background_task("mdm.send_pushes")
def send_pushes(rt, device_ids: list[int]) -> dict:
    """Push the given devices; a failure stays `push_pending` for the retry job. One APNs
    connection per process (a runtime resource), reused across tasks."""
    reason = getattr(rt.instance, "pushes_off_reason", None)
    if reason:
        return _pushes_off(rt.instance.database, device_ids, reason)
    sender = rt.resource("mdm.push_sender", lambda: PushSender(rt.instance.database, lambda: apns_client(rt.instance),
                                                               instance=rt.instance))
    outcome = sender.push(device_ids)
    return {str(k): v for k, v in outcome.items()}
