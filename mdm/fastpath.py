"""The idle check-in fast path: an Idle connect that finds no command in at most one database round trip.

Most of what a device sends is a signed `Idle` with nothing waiting for it. The full path
(`checkin.handle_connect`) resolves the identity by fingerprint, loads the device, locks the
next command and commits `last_seen_at` — four statements, a BEGIN and a COMMIT per request.
Here the facts that do not change between check-ins (this certificate was issued by our CA, it
is identity #i of device #d with UDID u, valid until t) come from a bounded per-process cache
keyed by the certificate's SHA-256 fingerprint, and one autocommit SELECT re-checks what can
change at any moment on any worker (revoked, superseded, device state) and whether a command is
waiting. On PostgreSQL a device that SELECT found with nothing open is then answered with no
query at all until a notification says otherwise (mdm.quiet), so a revocation or a queued command
elsewhere takes effect as soon as this process hears of it, milliseconds after the commit; on
SQLite (one process) every Idle is probed. The caches are also cleared locally on revocation and
re-enrollment.

`last_seen_at` is written only when the stored value is older than LAST_SEEN_RESOLUTION.
Anything else (a command waiting, an identity or device that is not current, a certificate
not in the cache) falls back to the full path, which decides and answers."""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Boolean, Integer, bindparam, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ipad_mdm.db import UTCDateTime, gather_after_commit, utcnow

from . import quiet as quiet_devices

log = logging.getLogger("mdm.fastpath")
CACHE_SIZE = int(os.environ.get("IPAD_MDM_IDENTITY_CACHE_SIZE", "65536"))
LAST_SEEN_RESOLUTION = dt.timedelta(seconds=int(os.environ.get("IPAD_MDM_LAST_SEEN_RESOLUTION_SECONDS", "60")))
CONNECT_STATES = ("enrolled", "authenticated")


@dataclass(frozen=True)
class KnownIdentity:
    """What the full path established about a certificate; none of it changes while the
    certificate lives (revocation and supersession are re-checked on every request)."""
    identity_id: int
    device_id: int
    udid: str
    not_before: dt.datetime
    not_after: dt.datetime


class IdentityCache:
    """A bounded LRU map fingerprint -> KnownIdentity, safe for gunicorn's threads."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._entries: OrderedDict[str, KnownIdentity] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.preloaded = False

    def get(self, fingerprint: str) -> KnownIdentity | None:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(fingerprint)
            self.hits += 1
            return entry

    def put(self, fingerprint: str, entry: KnownIdentity) -> None:
        with self._lock:
            self._entries[fingerprint] = entry
            self._entries.move_to_end(fingerprint)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)  # the least recently seen device goes first

    def forget(self, fingerprint: str) -> KnownIdentity | None:
        with self._lock:
            return self._entries.pop(fingerprint, None)

    def forget_device(self, device_id: int) -> None:
        with self._lock:
            for fp in [fp for fp, e in self._entries.items() if e.device_id == device_id]:
                del self._entries[fp]

    def __len__(self) -> int:
        return len(self._entries)


# One cache per database (tests run several servers in one process; ids are per database).
_CACHES: "weakref.WeakKeyDictionary[Engine, IdentityCache]" = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_for(engine: Engine) -> IdentityCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(engine)
        if cache is None:
            cache = _CACHES[engine] = IdentityCache()
        return cache


def forget(session, *, fingerprint: str | None = None, device_id: int | None = None) -> None:
    """Local invalidation on revocation or re-enrollment (other processes re-check in their query,
    or hear of it from PostgreSQL: mdm.quiet)."""
    engine = session.get_bind()
    cache = _CACHES.get(engine)
    devices = set() if device_id is None else {device_id}
    if cache is not None:
        if fingerprint:
            entry = cache.forget(fingerprint)
            if entry is not None:
                devices.add(entry.device_id)
        if device_id is not None:
            cache.forget_device(device_id)
    _forget_quiet(session, engine, devices)


def command_queued(session, device_id: int) -> None:
    """A command was queued for the device: from this transaction's commit on, this process's own
    Idles of it go to the database (other processes hear the NOTIFY, mdm.quiet)."""
    _forget_quiet(session, session.get_bind(), {device_id})


def _forget_quiet(session, engine, device_ids: set) -> None:
    quiet = quiet_devices.watching(engine)
    if quiet is None or not device_ids:
        return
    quiet.forget(device_ids)  # now, and again at the commit (a probe may have recorded it in between)
    gather_after_commit(session, "mdm.quiet_forget", set, quiet.forget).update(device_ids)


# One statement: is identity #i still device #d's current, unrevoked identity, may the device
# connect, is a command open for it and is it waiting (the full path's rule: queued or notnow
# after an Idle, or sent and unanswered for RESEND_AFTER): `open` is NULL for none open, 0 for
# one waiting, 1 for sent ones not yet due again; and when was the device last seen.
_PROBE_SQL = """
SELECT i.revoked_at IS NULL AND i.device_id = d.id AND d.current_identity_id = i.id
         AND d.enrollment_state IN ('enrolled', 'authenticated') AS ok,
       (SELECT min(CASE WHEN c.status IN ('queued', 'notnow') OR c.sent_at < :resend_before THEN 0 ELSE 1 END)
        FROM commands c WHERE c.device_id = d.id AND c.status IN ('queued', 'notnow', 'sent')) AS open,
       d.last_seen_at AS last_seen_at
FROM identity_certificates i, devices d
WHERE i.id = :identity_id AND d.id = :device_id
"""
_TOUCH_SQL = ("UPDATE devices SET last_seen_at = :now WHERE id = :device_id "
              "AND (last_seen_at IS NULL OR last_seen_at < :stale_before)")
_PROBE = text(_PROBE_SQL).bindparams(bindparam("resend_before", type_=UTCDateTime())).columns(ok=Boolean(), open=Integer(),
                                                                          last_seen_at=UTCDateTime())
_TOUCH = text(_TOUCH_SQL).bindparams(
    bindparam("now", type_=UTCDateTime()), bindparam("stale_before", type_=UTCDateTime()))


# The same two statements for psycopg, prepared once per connection.
_PROBE_PG = re.sub(r":(\w+)", r"%(\1)s", _PROBE_SQL)
_TOUCH_PG = re.sub(r":(\w+)", r"%(\1)s", _TOUCH_SQL)


def idle_without_command(database, known: KnownIdentity, *, resend_after: dt.timedelta, wake=None) -> bool:
    """True when the Idle connect of `known` is answered: identity current, no command waiting
    (and last_seen_at refreshed if stale). False: take the full path. On PostgreSQL a device the
    probe found with nothing open is answered without a query until notified (mdm.quiet; `wake`
    pushes devices again, see there). The probe is autocommit, so it is one round trip (no
    BEGIN/COMMIT); the rare refresh is a second one."""
    now = utcnow()
    if not known.not_before <= now <= known.not_after:
        return False  # outside the certificate's own validity: the full path judges (clock tolerance, refusal)
    quiet = quiet_devices.watch(database, wake, CACHE_SIZE)
    if quiet is not None and quiet.answer(known.identity_id, known.device_id, now):
        return True
    ticket = quiet.ticket() if quiet is not None else None  # before the probe's snapshot: see mdm.quiet
    params = {"identity_id": known.identity_id, "device_id": known.device_id, "resend_before": now - resend_after}
    for attempt in (1, 2):
        try:
            if database.is_postgres:
                found = _probe_postgres(database, known, params, now)
            else:
                found = _probe(database.engine, known, params, now)
            break
        except DBAPIError as exc:
            # Without a per-request pre-ping, a connection the database dropped fails on first
            # use; the pool is invalidated and the (read-only, idempotent) probe is tried once more.
            if attempt == 2 or not exc.connection_invalidated:
                raise
    if found is None:
        return False
    if found is not _ANSWERED_OPEN and quiet is not None:
        quiet.record(ticket, known.identity_id, known.device_id, found + LAST_SEEN_RESOLUTION)
    return True


# What a probe that answered says: the device's last_seen_at as it now stands (nothing open for
# it), or _ANSWERED_OPEN (answered, but a sent command is still open: not recorded as quiet).
_ANSWERED_OPEN = object()


def _stale(seen, now) -> bool:
    return seen is None or now - seen >= LAST_SEEN_RESOLUTION


def touch(device, now) -> None:
    """The full path's last_seen_at, coalesced like the fast path's: an UPDATE of the device row
    on every answer of a command burst buys nothing at a resolution of a minute."""
    if _stale(device.last_seen_at, now):
        device.last_seen_at = now


def _answer(ok, open_, seen, now, touch_row):
    """The probe's row -> None (full path), or what idle_without_command records."""
    if not ok or open_ == 0:
        return None
    if _stale(seen, now):
        touch_row()
        seen = now
    return _ANSWERED_OPEN if open_ is not None else seen


def _probe(engine: Engine, known: KnownIdentity, params: dict, now):
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        row = conn.execute(_PROBE, params).first()
        if row is None:
            return None
        return _answer(row.ok, row.open, row.last_seen_at, now, lambda: conn.execute(
            _TOUCH, {"now": now, "device_id": known.device_id, "stale_before": now - LAST_SEEN_RESOLUTION}))


def _probe_postgres(database, known: KnownIdentity, params: dict, now):
    """The probe on a plain autocommit psycopg connection (ipad_mdm.hot_connections): a prepared
    statement, no pool checkout, no SQLAlchemy result machinery."""
    import psycopg

    from ipad_mdm import hot_connections

    conn = hot_connections.take(database, autocommit=True)
    if conn is None:  # the database is away: the full path answers 503
        return None
    try:
        cur = conn.cursor()
        cur.execute(_PROBE_PG, params, prepare=True)
        row = cur.fetchone()
        found = None if row is None else _answer(row[0], row[1], row[2], now, lambda: cur.execute(
            _TOUCH_PG, {"now": now, "device_id": known.device_id, "stale_before": now - LAST_SEEN_RESOLUTION},
            prepare=True))
        hot_connections.give(conn)
        return found
    except psycopg.OperationalError as exc:
        hot_connections.drop(conn)
        hot_connections.forget(database.url)  # the others were opened to the same server: likely gone too
        raise DBAPIError(None, None, exc, connection_invalidated=True) from None
    except BaseException:
        hot_connections.drop(conn)
        raise


_PRELOAD = text("""
SELECT i.sha256_fingerprint, i.id, d.id, d.udid, i.not_before, i.not_after
FROM devices d JOIN identity_certificates i ON i.id = d.current_identity_id
WHERE i.revoked_at IS NULL AND d.enrollment_state IN ('enrolled', 'authenticated') AND d.id > :after
ORDER BY d.id LIMIT :slice
""").columns(not_before=UTCDateTime(), not_after=UTCDateTime())


def preload(database, cache: IdentityCache) -> int:
    """Fill a new process's cache with every current identity, once (a few tens of ms for
    10,000 iPads), so a worker does not take the full path for each device's first Idle.
    Safe to share: the probe re-checks everything that can change."""
    with cache._lock:
        if cache.preloaded:
            return 0
        cache.preloaded = True
    loaded, after = 0, 0
    try:
        with database.engine.connect() as conn:
            while loaded < cache.size:
                rows = conn.execute(_PRELOAD, {"after": after, "slice": min(5000, cache.size - loaded)}).all()
                if not rows:
                    break
                for fp, identity_id, device_id, udid, not_before, not_after in rows:
                    cache.put(fp, KnownIdentity(identity_id, device_id, udid, not_before, not_after))
                loaded += len(rows)
                after = rows[-1][2]
    except DBAPIError as exc:
        # Not fatal: every device still gets in by the full path. Try again on a later request.
        log.warning("identity cache not preloaded (%s); retrying later", type(exc.orig).__name__)
        cache.preloaded = False
    return loaded
