"""Which iPads have nothing waiting, known in this process without asking PostgreSQL.

Once the idle probe (mdm.fastpath) has found an iPad's identity current and no command open for
it, its next Idles are answered from here, with no database round trip at all. PostgreSQL says
when that stops being true: triggers (migration 0028) NOTIFY `ipad_mdm_idle` with the device's id
when a command is queued for it (or put back to queued or notnow), when its identity is revoked
or moved, when its current identity or enrollment state changes, when it is deleted; a thread in
each process LISTENs and drops the device. Nothing else may change what the probe decided.

The rules that keep this exact:
- An answer from here needs a listening connection that delivers: the listener goes live only
  once a NOTIFY of its own has come back, and sends one every LIVENESS_SECONDS that must come
  back within as long. When the connection is lost or stops delivering, every entry goes, and no
  entry is recorded until it delivers again (notifications sent meanwhile are lost). Nor is any
  without migration 0028's triggers (TRIGGERS, checked on every connection).
- What this process changes itself (a command queued, an identity revoked) drops the entry at
  its commit (mdm.fastpath.command_queued / forget), before the notification comes back.
- An entry is recorded only from a probe that began after the device's last notification
  (`ticket()` before the probe, `record()` after it). Otherwise a command queued after the
  probe's snapshot, whose notification this thread handled before the probe returned, would be
  overwritten by the probe's older "nothing waiting".
- An entry lives only until the device's last_seen_at is due its once-a-minute refresh, which
  goes through the probe: whatever a notification could miss is re-checked within a minute.
- Nothing is answered from memory while a notification is on its way in: data waiting on the
  listening socket, or taken off it and not yet applied (`reading`). A notification PostgreSQL has
  sent therefore counts at once, even while the listener thread waits for the GIL behind busy
  request threads; and another process's commit is followed within microseconds by PostgreSQL
  sending its notification, long before a request made after that commit can reach this one.
- What is left is that sliver, between a commit and PostgreSQL's sending. If the device's Idle was answered from here within
  REPUSH_WINDOW before a notification of a command for it, that answer may have come after the
  commit, so the device is pushed again: a queued command never waits for a check-in nobody
  asked for. (The probe itself has the same window, closed the same way: the push sent after
  the commit brings the device back.)

SQLite (the embedded default, one process) has no NOTIFY: there the probe answers every Idle."""
from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("mdm.quiet")
CHANNEL = "ipad_mdm_idle"
APPLICATION_NAME = "ipad-mdm idle listener"  # in pg_stat_activity
# Migration 0028's triggers: without every one of them, nothing is answered from memory.
TRIGGERS = ("commands_idle_notify", "identity_idle_notify", "identity_idle_notify_delete", "devices_idle_notify",
            "devices_idle_notify_delete", "commands_idle_notify_truncate", "identity_certificates_idle_notify_truncate",
            "devices_idle_notify_truncate")
REPUSH_WINDOW = 10.0  # seconds: far beyond a notification's delivery, far below a person's patience
LIVENESS_SECONDS = 5.0  # the listener's own notification comes back within this, or everything goes
_FORGET_AFTER = 4096  # notified device ids remembered for tickets in flight before they are folded


@dataclass
class _Entry:
    identity_id: int
    until: object  # datetime: last_seen_at is due its refresh (through the probe) from then on
    answered: float = 0.0  # time.monotonic() of the last Idle answered from this entry


class QuietDevices:
    """device id -> the identity whose Idles are answered without a query, until notified."""

    def __init__(self, wake: Callable[[list[int]], object] | None = None, size: int | None = None):
        self.wake = wake
        self.size = size  # at most this many devices (mdm.fastpath: as many as its identity cache)
        self.live = False
        self.hits = 0
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._epoch = 0  # a new one each time LISTEN starts or stops
        self._seq = 0  # notifications handled so far
        self._notified: dict[int, int] = {}  # device id -> seq of its last notification
        self._floor = 0  # tickets older than this are refused (all devices notified, or folded)
        self._fd: int | None = None  # the socket notifications arrive on, while live
        self.reading = False  # the listener is taking notifications in (off the socket, not yet applied)

    def answer(self, identity_id: int, device_id: int, now) -> bool:
        with self._lock:
            entry = self._entries.get(device_id) if self.live else None
            if entry is None or entry.identity_id != identity_id or now >= entry.until:
                return False
            if self.reading or _readable(self._fd):
                return False  # a notification is on its way in: it may be about this device
            entry.answered = time.monotonic()
            self.hits += 1
            return True

    def ticket(self) -> tuple[int, int] | None:
        """Taken before the probe; None while not listening (then nothing is recorded)."""
        with self._lock:
            return (self._epoch, self._seq) if self.live else None

    def record(self, ticket, identity_id: int, device_id: int, until) -> bool:
        if ticket is None:
            return False
        epoch, seq = ticket
        with self._lock:
            if not self.live or epoch != self._epoch or seq < self._floor or self._notified.get(device_id, -1) > seq:
                return False  # something about this device changed since the probe began
            if self.size is not None and device_id not in self._entries and len(self._entries) >= self.size:
                return False
            self._entries[device_id] = _Entry(identity_id, until)
            return True

    def changed(self, payload: str) -> None:
        """A notification: 'c<id>' a command for device <id>, 'd<id>' the device or its identity,
        '*' every device (a table was truncated)."""
        if payload.startswith("p"):
            return  # a listener's ping (its own or another process's): nothing changed
        kind, device_id = payload[:1], payload[1:]
        if payload != "*" and not device_id.isdigit():
            log.warning("idle notification %r not understood; forgetting every device", payload[:40])
            payload = "*"  # it may have been about any device, a command among them
        now = time.monotonic()
        with self._lock:
            if payload == "*":
                woken = self._recently_answered(now)
                self._seq += 1
                self._entries.clear()
                self._notified.clear()
                self._floor = self._seq
            else:
                entry = self._drop(int(device_id))
                woken = [int(device_id)] if kind == "c" and entry is not None and _recent(entry, now) else []
        self._wake(woken)

    def forget(self, device_ids) -> None:
        """What this process changed itself, at its commit: no need to wait for its notification."""
        with self._lock:
            for device_id in device_ids:
                self._drop(device_id)

    def _drop(self, device_id: int) -> _Entry | None:
        self._seq += 1
        self._notified[device_id] = self._seq
        if len(self._notified) > _FORGET_AFTER:
            self._notified.clear()
            self._floor = self._seq
        return self._entries.pop(device_id, None)

    def go_live(self, fd: int | None = None) -> None:
        with self._lock:
            self._fd = fd
            self._entries.clear()
            self._notified.clear()
            self._epoch += 1
            self._floor = self._seq
            self.live = True

    def go_dark(self, *, wake: bool = True) -> None:
        """The connection is gone: notifications may have been missed, for commands too."""
        with self._lock:
            woken = self._recently_answered(time.monotonic()) if wake else []
            self._entries.clear()
            self._epoch += 1
            self.live = False
        self._wake(woken)

    def _recently_answered(self, now: float) -> list[int]:
        return [d for d, e in self._entries.items() if _recent(e, now)]

    def _wake(self, device_ids: list[int]) -> None:
        """Push them again, from a thread of its own: the listener does not wait on the broker."""
        if device_ids and self.wake is not None:
            threading.Thread(target=self._push, args=(device_ids,), name="ipad-mdm-idle-repush", daemon=True).start()

    def _push(self, device_ids: list[int]) -> None:
        try:
            self.wake(device_ids)
            log.info("pushed %d device(s) again: a command came while their Idles were answered here",
                     len(device_ids))
        except Exception:  # noqa: BLE001 - push_pending is set by the enqueue; the retry job pushes
            log.exception("could not push %d device(s) again", len(device_ids))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, device_id: int) -> bool:
        return device_id in self._entries


def _readable(fd: int | None) -> bool:
    """Data waiting on the listening socket (a closed descriptor counts as waiting)."""
    if fd is None:
        return False
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _recent(entry: _Entry, now: float) -> bool:
    return entry.answered != 0.0 and now - entry.answered < REPUSH_WINDOW


class _Listener(threading.Thread):
    """LISTENs on its own autocommit connection and hands every notification to `quiet`."""

    def __init__(self, database, quiet: QuietDevices):
        super().__init__(name="ipad-mdm-idle-listener", daemon=True)
        self._database = weakref.ref(database)
        self.quiet = quiet
        self.stopping = threading.Event()
        self.paused = threading.Event()  # tests: hold notifications back, as a busy process would
        self.paused.set()
        self.warned = False
        self.lost = 0  # connections given up

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            conn = self._connect()
            if conn is not None:
                try:
                    self._listen(conn)
                    backoff = 0.5
                except Exception as exc:  # noqa: BLE001 - the database went away: go dark, reconnect
                    self.lost += 1
                    if not self.stopping.is_set():
                        log.warning("idle listener lost its connection (%s); reconnecting", type(exc).__name__)
                finally:
                    self.quiet.go_dark(wake=not self.stopping.is_set())
                    conn.close()
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _connect(self):
        import psycopg

        from ipad_mdm import hot_connections

        database = self._database()
        if database is None:
            self.stopping.set()
            return None
        try:
            return hot_connections.connect(database, autocommit=True, application_name=APPLICATION_NAME, keepalives=1,
                                           keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        except psycopg.Error as exc:
            log.warning("idle listener cannot connect (%s); Idles go to the database", type(exc).__name__)
            return None

    def _triggers_missing(self) -> bool:
        database = self._database()  # not held while listening: the thread must not keep it alive
        return database is not None and not database.triggers_enabled(*TRIGGERS)

    def _listen(self, conn) -> None:
        if self._triggers_missing():
            # A schema not made by the migrations: nothing would tell this process of a change.
            if not self.warned:
                self.warned = True
                log.error("the idle notification triggers (migration 0028) are missing: every Idle is probed")
            self.stopping.wait(60)
            return
        conn.execute(f"LISTEN {CHANNEL}")
        # Live only once a notification of its own has come back, and only while each one sent
        # LIVENESS_SECONDS after the last comes back within as long: a connection that stopped
        # delivering (dropped without a word, or a pooler in transaction mode that never delivers)
        # loses the right to answer from memory, not the other way round.
        fd, ping, sent = conn.fileno(), None, float("-inf")
        while not self.stopping.is_set():
            now = time.monotonic()
            if ping is None and now - sent >= LIVENESS_SECONDS:
                with self._reading():  # the ping's statement may take notifications into the driver's backlog
                    ping, sent = self._ping(conn), now
                    ping = self._take(conn, fd, ping)
            elif ping is not None and now - sent > LIVENESS_SECONDS:
                raise ConnectionError("the listening connection did not deliver its own notification")
            # Waits for the socket itself (without the GIL), so that answer() sees a notification that has
            # arrived and is not applied yet: readable until taken in, `reading` from then until applied.
            if select.select([fd], [], [], LIVENESS_SECONDS / 5)[0]:
                self.paused.wait()  # tests: a notification not taken in yet
                with self._reading():
                    ping = self._take(conn, fd, ping)

    @contextlib.contextmanager
    def _reading(self):
        self.quiet.reading = True
        try:
            yield
        finally:
            self.quiet.reading = False

    def _take(self, conn, fd: int, ping: str | None) -> str | None:
        """Apply every notification the connection has: the ping outstanding, or None once it came back."""
        for note in conn.notifies(timeout=0):
            if note.payload == ping:
                ping = None
                if not self.quiet.live:
                    self.quiet.go_live(fd)
                continue
            self.quiet.changed(note.payload)
        return ping

    @staticmethod
    def _ping(conn) -> str:
        payload = f"p{os.getpid()}-{time.monotonic_ns()}"
        conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
        return payload


_WATCHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # engine -> (QuietDevices, _Listener)
_WATCHED_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _WATCHED, _WATCHED_LOCK
    _WATCHED, _WATCHED_LOCK = weakref.WeakKeyDictionary(), threading.Lock()  # the parent's thread is not here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def watch(database, wake: Callable[[list[int]], object] | None = None, size: int | None = None) -> QuietDevices | None:
    """This process's QuietDevices for a PostgreSQL database (at most `size` devices), its listener
    started on first use; None for SQLite. Stopped by database.dispose()."""
    if not database.is_postgres:
        return None
    with _WATCHED_LOCK:
        found = _WATCHED.get(database.engine)
        if found is None:
            quiet = QuietDevices(wake, size)
            listener = _Listener(database, quiet)
            _WATCHED[database.engine] = found = (quiet, listener)
            listener.start()
            database.on_dispose(lambda: _stop(database.engine))
        elif found[0].wake is None and wake is not None:
            found[0].wake = wake
        return found[0]


def watching(engine) -> QuietDevices | None:
    """This process's QuietDevices for the database behind `engine`, if it has one (none started)."""
    found = _WATCHED.get(engine)
    return found[0] if found else None


def listener_for(database) -> _Listener | None:
    found = _WATCHED.get(database.engine)
    return found[1] if found else None


def _stop(engine) -> None:
    with _WATCHED_LOCK:
        found = _WATCHED.pop(engine, None)
    if found is not None:
        found[1].stopping.set()
        found[1].paused.set()
        found[0].go_dark(wake=False)
