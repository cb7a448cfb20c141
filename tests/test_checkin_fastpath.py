"""The idle check-in fast path (issue: fast paths at 10,000 iPads).

An Idle connect that finds no command costs one database statement, in autocommit (no
BEGIN/COMMIT), with no pre-ping; revocation on another process, a waiting command, a
superseded identity or a re-enrollment still take effect on the very next request.
"""
from __future__ import annotations

import datetime as dt
import plistlib
import threading
import time

import pytest
from sqlalchemy import event, select, update

from ipad_mdm.db import Database, utcnow
from mdm import fastpath, quiet
from mdm.identity import revoke_identity
from mdm.models import Command, Device, IdentityCertificate


class StatementLog:
    """Every statement the server sends to its database, whichever way: through SQLAlchemy's
    engine (events) or on a raw psycopg cursor (the PostgreSQL probe), with whether the
    connection was in autocommit (no BEGIN/COMMIT round trips around it)."""

    def __init__(self, engine, monkeypatch):
        self.engine = engine
        self.statements: list[tuple[str, bool]] = []
        self._inside = threading.local()  # set while SQLAlchemy executes: counted once, by its event
        event.listen(engine, "before_cursor_execute", self._execute)
        event.listen(engine, "after_cursor_execute", self._done)
        import psycopg

        real = psycopg.Cursor.execute
        log = self

        def execute(cursor, query, params=None, **kw):
            if not getattr(log._inside, "on", False):
                log.statements.append((str(query).strip().split()[0].upper(), cursor.connection.autocommit))
            return real(cursor, query, params, **kw)

        monkeypatch.setattr(psycopg.Cursor, "execute", execute)

    def _execute(self, conn, cursor, statement, params, context, executemany):
        self._inside.on = True
        dbapi = conn.connection.dbapi_connection
        autocommit = bool(getattr(dbapi, "autocommit", False)) or getattr(dbapi, "isolation_level", "x") is None
        self.statements.append((statement.strip().split()[0].upper(), autocommit))

    def _done(self, *a):
        self._inside.on = False

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._execute)
        event.remove(self.engine, "after_cursor_execute", self._done)


def _idle(sim):
    r = sim.connect("Idle")
    assert r.status_code == 200, r.text
    return r


def listening(server):
    """PostgreSQL: this server's mdm.quiet, once its listener is in place (None on SQLite)."""
    found = quiet.watch(server.instance.database)
    if found is not None:
        wait_until(lambda: found.live, "the idle listener is listening")
    return found


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    """Wait for something another thread does (a notification handled), not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {timeout} s: {what}")
        time.sleep(0.01)


def device_id(server, sim) -> int:
    with server.session() as s:
        return s.scalar(select(Device.id).where(Device.udid == sim.udid))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_idle_with_no_command_is_one_autocommit_statement(server, enrolled, monkeypatch):
    """SQLite: one autocommit SELECT per Idle. PostgreSQL: that SELECT once, then none at all
    while nothing is notified (mdm.quiet)."""
    engine = server.instance.database.engine
    assert engine.pool._pre_ping is False
    watched = listening(server)
    log = StatementLog(engine, monkeypatch)
    try:
        for _ in range(6):
            assert _idle(enrolled).content == b""
    finally:
        log.close()
    # the cache held this identity since its answered inventory commands: no full path
    expected = ["SELECT"] if watched is not None else ["SELECT"] * 6
    assert [kind for kind, _ in log.statements] == expected, log.statements
    assert all(autocommit for _, autocommit in log.statements), log.statements
    assert len(fastpath.cache_for(engine)) >= 1
    if watched is not None:
        assert device_id(server, enrolled) in watched and watched.hits >= 5
    # Answered in front of Flask (mdm.connect_wsgi): a bare 200, none of a Flask response's headers.
    answer = _idle(enrolled)
    assert answer.headers.get("content-length") == "0" and "content-type" not in answer.headers


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_last_seen_is_coalesced_not_written_every_time(server, enrolled, monkeypatch):
    watched = listening(server)
    old = utcnow() - dt.timedelta(hours=2)
    with server.session() as s:
        s.execute(update(Device).where(Device.udid == enrolled.udid).values(last_seen_at=old))
    if watched is not None:
        watched.forget([device_id(server, enrolled)])  # last_seen_at never goes back outside a test
    log = StatementLog(server.instance.database.engine, monkeypatch)
    try:
        _idle(enrolled)
        _idle(enrolled)
    finally:
        log.close()
    expected = ["SELECT", "UPDATE"] if watched is not None else ["SELECT", "UPDATE", "SELECT"]
    assert [k for k, _ in log.statements] == expected, log.statements
    with server.session() as s:
        seen = s.scalar(select(Device.last_seen_at).where(Device.udid == enrolled.udid))
    assert utcnow() - seen < dt.timedelta(minutes=1)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_revocation_by_another_process_refuses_the_next_idle(server, enrolled):
    watched = listening(server)
    _idle(enrolled)
    _idle(enrolled)
    if watched is not None:
        assert device_id(server, enrolled) in watched  # answered without a query until told
    # Another process (its own engine, so this server's caches are not told directly): SQLite's one
    # statement re-checks revocation; on PostgreSQL the trigger's NOTIFY tells this process.
    other = Database(server.instance.database.url)
    try:
        with other.session() as s:
            cert = s.scalar(select(IdentityCertificate).where(IdentityCertificate.device.has(udid=enrolled.udid)))
            revoke_identity(s, cert, "keyCompromise")
    finally:
        other.dispose()
    if watched is not None:
        wait_until(lambda: device_id(server, enrolled) not in watched, "the revocation is heard")
    r = enrolled.connect("Idle")
    assert r.status_code == 403 and "revoked" in r.json()["error"]
    assert enrolled.connect("Idle").status_code == 403  # and stays refused


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_waiting_command_is_delivered_once_not_skipped(server, enrolled):
    watched = listening(server)
    _idle(enrolled)
    _idle(enrolled)
    if watched is not None:
        assert device_id(server, enrolled) in watched
    # Queued through this process's API: its own Idles see the commands from the commit on,
    # without waiting for the notification.
    with server.http(headers={"Authorization": f"Bearer {server.api_token()}"}) as api:
        uuids = [api.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "SecurityInfo"}).json()["command_uuid"]
                 for _ in range(3)]
    r = _idle(enrolled)
    got = [plistlib.loads(r.content)["CommandUUID"]]
    while True:
        status, payload = enrolled.answer(plistlib.loads(r.content)["Command"])
        r = enrolled.connect(status, got[-1], **payload)
        if not r.content:
            break
        got.append(plistlib.loads(r.content)["CommandUUID"])
    assert got == uuids
    assert _idle(enrolled).content == b""
    with server.session() as s:
        statuses = s.scalars(select(Command.status).where(Command.uuid.in_(uuids))).all()
    assert statuses == ["acknowledged"] * 3


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_state_change_elsewhere_sends_idle_to_the_full_path(server, enrolled):
    """A device checked out or retired by another worker is refused on its next Idle."""
    watched = listening(server)
    _idle(enrolled)
    _idle(enrolled)
    with server.session() as s:
        s.execute(update(Device).where(Device.udid == enrolled.udid).values(enrollment_state="retired"))
    if watched is not None:
        wait_until(lambda: device_id(server, enrolled) not in watched, "the state change is heard")
    r = enrolled.connect("Idle")
    assert r.status_code == 403 and "retired" in r.json()["error"]


def test_udid_of_another_device_is_not_served_from_the_cache(server, enrolled):
    _idle(enrolled)
    other = server.simulator()
    other.enroll(server.enrollment_url())
    other.process_commands()
    # The first device's identity naming the second device's UDID: the full path refuses it.
    body = plistlib.dumps({"UDID": other.udid, "Status": "Idle"})
    r = enrolled.client.put(f"{server.url}/mdm/connect", content=body, headers={"Mdm-Signature": enrolled.sign(body)})
    assert r.status_code == 403
    other.close()


def test_identity_cache_is_a_bounded_lru():
    cache = fastpath.IdentityCache(size=3)
    now = utcnow()

    def entry(i):
        return fastpath.KnownIdentity(i, i, f"U{i}", now, now)

    for i in range(3):
        cache.put(f"fp{i}", entry(i))
    assert cache.get("fp0") is not None  # fp0 is now the most recently used
    cache.put("fp3", entry(3))  # evicts fp1, the least recently used, not everything
    assert cache.get("fp1") is None and len(cache) == 3
    assert all(cache.get(f"fp{i}") is not None for i in (0, 2, 3))
    cache.forget_device(2)
    assert cache.get("fp2") is None and len(cache) == 2


def test_a_new_worker_fills_its_cache_from_the_database(server, enrolled):
    """A worker that starts with thousands of enrolled iPads does not send each one's first Idle
    down the full path: every current, unrevoked identity is loaded once."""
    from cryptography.hazmat.primitives import hashes

    other = server.simulator()
    other.enroll(server.enrollment_url())
    other.process_commands()
    with server.session() as s:
        revoke_identity(s, s.scalar(select(IdentityCertificate).where(IdentityCertificate.device.has(udid=other.udid))),
                        "keyCompromise")
    cache = fastpath.IdentityCache()
    assert fastpath.preload(server.instance.database, cache) == 1 and cache.preloaded
    known = cache.get(enrolled.identity.fingerprint(hashes.SHA256()).hex())
    assert known is not None and known.udid == enrolled.udid
    assert cache.get(other.identity.fingerprint(hashes.SHA256()).hex()) is None  # revoked: not loaded
    assert fastpath.preload(server.instance.database, cache) == 0  # once per process
    other.close()
