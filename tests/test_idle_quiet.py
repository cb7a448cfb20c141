"""Idles answered with no database round trip on PostgreSQL (mdm.quiet), and what keeps them exact:
the triggers' NOTIFY, the ticket taken before the probe, the connection's loss, the push sent again
when a command's notification comes after an Idle answered from memory."""
from __future__ import annotations

import datetime as dt
import plistlib

import pytest
from sqlalchemy import select, text

from ipad_mdm.db import Database, utcnow
from mdm import commands, quiet
from mdm.models import Device
from tests.test_checkin_fastpath import StatementLog, _idle, device_id, listening, wait_until

LATER = utcnow() + dt.timedelta(hours=1)


def queued_elsewhere(server, device: int):
    """A command queued by another process (a Celery worker, the CLI): only PostgreSQL tells the server."""
    other = Database(server.instance.database.url)
    try:
        with other.session() as s:
            return commands.queue(s, s.get(Device, device), "SecurityInfo")
    finally:
        other.dispose()


def test_an_entry_is_answered_until_notified():
    q = quiet.QuietDevices()
    q.go_live()
    assert q.record(q.ticket(), 7, 1, LATER)
    assert q.answer(7, 1, utcnow())
    assert not q.answer(8, 1, utcnow())  # another identity of the device: the probe decides
    assert not q.answer(7, 1, LATER)  # last_seen_at due its refresh: through the probe
    q.changed("d1")
    assert not q.answer(7, 1, utcnow()) and 1 not in q


def test_a_notification_during_the_probe_wins_over_its_answer():
    """The probe's snapshot may predate a command queued while it ran; if that command's
    notification was handled before the probe returned, the probe's 'nothing open' is stale."""
    q = quiet.QuietDevices()
    q.go_live()
    ticket = q.ticket()
    q.changed("c1")  # handled while the probe was on its way
    assert not q.record(ticket, 7, 1, LATER)
    assert q.record(ticket, 8, 2, LATER)  # another device: not concerned
    assert q.record(q.ticket(), 7, 1, LATER)  # a probe begun after it: recorded
    q.changed("*")
    assert len(q) == 0


def test_nothing_is_answered_or_recorded_while_not_listening():
    q = quiet.QuietDevices()
    assert q.ticket() is None and not q.record(None, 7, 1, LATER)
    q.go_live()
    ticket = q.ticket()
    q.record(q.ticket(), 7, 1, LATER)
    q.go_dark()
    assert not q.answer(7, 1, utcnow()) and len(q) == 0
    q.go_live()
    assert not q.record(ticket, 7, 1, LATER)  # taken before the connection was lost


def test_a_command_after_an_answer_from_memory_pushes_the_device_again():
    woken = []
    q = quiet.QuietDevices(wake=woken.extend)
    q.go_live()
    for device in (1, 2, 3):
        q.record(q.ticket(), device, device, LATER)
    assert q.answer(1, 1, utcnow()) and q.answer(2, 2, utcnow())
    q.changed("c1")  # answered just now: the answer may have come after the command's commit
    q.changed("d2")  # not a command: nothing to push
    q.changed("c3")  # never answered from memory: its own push brings it
    q.changed("not-a-device")  # not understood: everything goes, nothing is lost
    wait_until(lambda: woken == [1], "device 1 is pushed again (from a thread of its own)")
    assert len(q) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_command_queued_by_another_process_reaches_the_next_idle(server, enrolled, monkeypatch):
    watched = listening(server)
    _idle(enrolled)
    log = StatementLog(server.instance.database.engine, monkeypatch)
    try:
        assert _idle(enrolled).content == b""
    finally:
        log.close()
    assert log.statements == [] and device_id(server, enrolled) in watched
    cmd = queued_elsewhere(server, device_id(server, enrolled))
    wait_until(lambda: device_id(server, enrolled) not in watched, "the command's notification is heard")
    assert plistlib.loads(_idle(enrolled).content)["CommandUUID"] == cmd.uuid


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_notification_arrived_but_not_applied_sends_the_idle_to_the_database(server, enrolled, monkeypatch):
    """The listener has not taken in a command's notification yet (busy request threads, say), but it
    is on the listening socket: the Idle is probed, not answered from memory, and gets the command."""
    monkeypatch.setattr(quiet, "LIVENESS_SECONDS", 60.0)  # no ping of its own in between
    watched = listening(server)
    _idle(enrolled)
    listener = quiet.listener_for(server.instance.database)
    device = device_id(server, enrolled)
    assert device in watched
    listener.paused.clear()
    try:
        cmd = queued_elsewhere(server, device)
        wait_until(lambda: quiet._readable(watched._fd), "the notification is on the listening socket")
        assert device in watched  # not applied
        assert plistlib.loads(_idle(enrolled).content)["CommandUUID"] == cmd.uuid
    finally:
        listener.paused.set()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_idle_answered_before_the_notification_is_pushed_again(server, enrolled, monkeypatch):
    """The window mdm.quiet closes by pushing: the notification not yet on this process's socket
    (still with PostgreSQL, as a moment after the commit), an Idle answered from memory after the
    commit, then the push that brings the iPad back for its command."""
    monkeypatch.setattr(quiet, "LIVENESS_SECONDS", 60.0)  # no ping of its own in between
    watched = listening(server)
    _idle(enrolled)
    listener = quiet.listener_for(server.instance.database)
    device = device_id(server, enrolled)
    pushes_before = len(server.apns.pushes)
    listener.paused.clear()
    try:
        cmd = queued_elsewhere(server, device)
        with monkeypatch.context() as m:
            m.setattr(quiet, "_readable", lambda fd: False)  # as if it had not reached this process yet
            assert _idle(enrolled).content == b""  # the window: answered from memory after the commit
    finally:
        listener.paused.set()
    wait_until(lambda: device not in watched, "the notification is handled")
    server.wait_pushes()
    pushed = server.apns.wait_for(pushes_before + 1)[pushes_before:]
    assert [p.token for p in pushed] == [enrolled.push_token.hex()]
    assert plistlib.loads(_idle(enrolled).content)["CommandUUID"] == cmd.uuid


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lost_listening_connection_sends_idles_to_the_database_until_it_is_back(server, enrolled, monkeypatch):
    watched = listening(server)
    _idle(enrolled)
    assert device_id(server, enrolled) in watched
    with server.session() as s:
        killed = s.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = :name AND datname = current_database()"),
                           {"name": quiet.APPLICATION_NAME}).scalars().all()
    assert killed == [True]
    wait_until(lambda: not watched.live or len(watched) == 0, "the lost connection is noticed")
    log = StatementLog(server.instance.database.engine, monkeypatch)
    try:
        _idle(enrolled)  # probed, whether the listener is back yet or not
    finally:
        log.close()
    assert [k for k, _ in log.statements] == ["SELECT"]
    wait_until(lambda: watched.live, "the listener is back")
    _idle(enrolled)
    assert device_id(server, enrolled) in watched
    hits = watched.hits
    assert _idle(enrolled).content == b"" and watched.hits == hits + 1
    with server.session() as s:
        assert s.scalar(select(Device.enrollment_state).where(Device.udid == enrolled.udid)) == "enrolled"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_without_the_triggers_nothing_is_answered_from_memory(server, enrolled, monkeypatch, caplog):
    """A schema not made by the migrations (no NOTIFY on change): every Idle is probed."""
    with server.session() as s:
        s.execute(text("ALTER TABLE commands DISABLE TRIGGER commands_idle_notify"))
    server.instance.database.dispose()  # a new listener, which finds the trigger disabled
    watched = quiet.watch(server.instance.database)
    wait_until(lambda: "idle notification triggers (migration 0028) are missing" in caplog.text, "the listener looks")
    log = StatementLog(server.instance.database.engine, monkeypatch)
    try:
        for _ in range(3):
            assert _idle(enrolled).content == b""
    finally:
        log.close()
    assert [k for k, _ in log.statements] == ["SELECT"] * 3 and not watched.live and len(watched) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_that_does_not_deliver_never_answers_from_memory(server, monkeypatch):
    """LISTEN accepted but nothing delivered (a pooler in transaction mode, a half-dead link): the
    listener's own notification does not come back, so it never goes live and keeps reconnecting."""
    monkeypatch.setattr(quiet, "LIVENESS_SECONDS", 0.3)
    monkeypatch.setattr(quiet._Listener, "_ping", staticmethod(lambda conn: "p-never-sent"))
    went_live = []
    q = quiet.QuietDevices()
    monkeypatch.setattr(q, "go_live", lambda: went_live.append(1))
    listener = quiet._Listener(server.instance.database, q)
    listener.start()
    try:
        wait_until(lambda: listener.lost >= 2, "the listener gives the connection up, twice")
    finally:
        listener.stopping.set()
    assert went_live == [] and not q.live and q.ticket() is None
