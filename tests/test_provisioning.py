"""The provisioning of new enrollments, off the iPad's request path (mdm.provisioning).

A first TokenUpdate marks the device; a background pass runs `devices.enrolled` for every pending
enrollment, in batches, and pushes the iPads it queued commands for. These tests hold what that
must keep: until its pass the iPad opens no document; a lost task is made up by the sweep; a
pass provisions many iPads in one transaction; two passes at once never provision an iPad twice;
one broken iPad does not hold back the others; and answers that arrive before the pass count.
"""
from __future__ import annotations

import ipaddress
import threading

import pytest
from sqlalchemy import func, select

from compliance import DeviceVerdict, VerdictTransition
from ipad_mdm.jobs import registered_jobs
from console.models import DeviceRecord
from document_gateway.models import DeviceAccess
from mdm import Command, Device, provisioning
from vpn.models import WireGuardPeer

both = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def lost_tasks(server, monkeypatch):
    """The provisioning task's messages are lost (as with a broker that was down): only the pass
    a test runs itself, or the sweep, provisions."""
    dispatcher = server.dispatcher
    real = dispatcher.submit
    lost = []

    def submit(name, *args):
        if name == provisioning.TASK:
            lost.append(name)
            return True
        return real(name, *args)

    monkeypatch.setattr(dispatcher, "submit", submit)
    return lost


def _may_open_documents(server, udid: str) -> bool:
    with server.session() as s:
        out: dict = {}
        server.hooks.emit("access.describe", session=s, device=s.scalar(select(Device).where(Device.udid == udid)),
                          out=out)
        return out["document_access"]


def _provisioned(server, udid: str) -> dict:
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == udid))
        return {
            "pending": device.provision_pending,
            "peers": s.scalar(select(func.count()).select_from(WireGuardPeer).where(WireGuardPeer.device_id == device.id)),
            "verdict": s.get(DeviceVerdict, device.id) is not None,
            "enrolled_transitions": s.scalar(select(func.count()).select_from(VerdictTransition).where(
                VerdictTransition.device_id == device.id, VerdictTransition.trigger == "enrolled")),
            "record": s.scalar(select(DeviceRecord).where(DeviceRecord.device_id == device.id)) is not None,
            "access": s.get(DeviceAccess, device.id) is not None,
        }


DONE = {"pending": False, "peers": 1, "verdict": True, "enrolled_transitions": 1, "record": True, "access": True}
NOT_YET = {"pending": True, "peers": 0, "verdict": False, "enrolled_transitions": 0, "record": False, "access": False}


@both
def test_the_sweep_provisions_what_a_lost_task_left_in_one_pass(server, lost_tasks):
    sims = server.enroll_ipads(3)
    assert len(lost_tasks) == 3  # asked for once per TokenUpdate, after its commit
    for sim in sims:
        # Enrolled, nothing decided yet: no verdict, so the gateway's one access decision refuses.
        assert _provisioned(server, sim.udid) == NOT_YET
        assert _may_open_documents(server, sim.udid) is False
    tokens = {sim.push_token.hex() for sim in sims}
    # The TokenUpdate does not push by itself: its provisioning pass will, once, for everything queued.
    assert not [p for p in server.apns.pushes if p.token in tokens]

    sweep = next(j for j in registered_jobs() if j.name == provisioning.TASK)
    assert sweep.interval_seconds == 60
    assert sweep.run(server.runtime) == {"provisioned": 3, "failed": 0}
    server.wait_pushes()
    for sim in sims:
        assert _provisioned(server, sim.udid) == DONE
    # One push each wakes the iPads for their inventory queries and what their provisioning queued
    # (the VPN profile, declarative management).
    assert sorted(p.token for p in server.apns.pushes if p.token in tokens) == sorted(tokens)
    for sim in sims:
        kinds = [c["Command"]["RequestType"] for c in sim.process_commands()]
        assert "InstallProfile" in kinds, kinds
    # Nothing is left to provision, and a second pass does nothing.
    assert provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher) == \
        {"provisioned": 0, "failed": 0}


@both
def test_a_pass_takes_many_enrollments_in_one_transaction(server, lost_tasks):
    sims = server.enroll_ipads(5)
    commits = []
    from sqlalchemy import event

    engine = server.instance.database.engine
    me = threading.current_thread()
    listener = lambda conn: threading.current_thread() is me and commits.append(1)  # noqa: E731
    event.listen(engine, "commit", listener)
    try:
        counts = provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher, batch=3)
    finally:
        event.remove(engine, "commit", listener)
    assert counts == {"provisioned": 5, "failed": 0}
    assert len(commits) == 2  # 3 + 2, not 5 (the pushes it asked for commit on the task threads)
    for sim in sims:
        assert _provisioned(server, sim.udid) == DONE


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_pass_of_six_ipads_makes_as_many_statements_as_a_pass_of_one(server, lost_tasks):
    """The subscribers of devices.enrolled work set-based: a query per table for the pass, one INSERT
    of each kind of row (peers, their VPN profile commands, handover records, verdicts), not a round
    of statements per iPad. (On SQLite, an in-process library with no round trip, SQLAlchemy writes
    the rows it reads back one INSERT each.)"""
    from sqlalchemy import event

    engine = server.instance.database.engine
    me = threading.current_thread()

    def statements_of_a_pass(n):
        sims = server.enroll_ipads(n)
        seen = []
        listener = lambda *a, **k: threading.current_thread() is me and seen.append(a[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            counts = provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert counts == {"provisioned": n, "failed": 0}
        for sim in sims:
            assert _provisioned(server, sim.udid) == DONE
        return seen

    one, six = statements_of_a_pass(1), statements_of_a_pass(6)
    # (The gateway's access rows read the verdicts of a batch back once; a lone iPad's is in the session.)
    assert len(six) <= len(one) + 1, "\n".join(["ONE"] + [st[:90] for st in one] + ["SIX"] + [st[:90] for st in six])
    assert sum("INSERT INTO vpn_wireguard_peers" in st for st in six) == 1, six
    assert sum("INSERT INTO console_device_records" in st for st in six) == 1, six


@both
def test_a_pass_whose_addresses_were_taken_meanwhile_still_gives_every_ipad_its_own(server, lost_tasks, monkeypatch):
    """A pass's new peers are one INSERT with random addresses; a row whose address another
    transaction took inserts nothing, and that iPad gets an address the one-by-one way."""
    from vpn import pool

    first = server.enroll_ipads(2)
    provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher)
    with server.session() as s:
        taken = list(s.scalars(select(WireGuardPeer.address_v4)))
    real = pool._random_addresses
    monkeypatch.setattr(pool, "_random_addresses", lambda vs, n: (
        [ipaddress.IPv4Address(a) for a in taken] + [a for a in real(vs, n + 2) if str(a) not in taken])[:n])
    sims = server.enroll_ipads(3)
    assert provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher) == \
        {"provisioned": 3, "failed": 0}
    with server.session() as s:
        peers = list(s.scalars(select(WireGuardPeer)))
        profiles = s.execute(select(Command.device_id, Command.uuid).where(Command.request_type == "InstallProfile")).all()
    assert len(peers) == 5 and len({p.address_v4 for p in peers}) == 5
    assert sorted((p.device_id, p.profile_command_uuid) for p in peers) == sorted(profiles)  # one profile each
    for sim in first + sims:
        assert _provisioned(server, sim.udid) == DONE


@both
def test_a_subscriber_that_fails_for_one_ipad_of_a_pass_still_serves_the_others(server, lost_tasks):
    sims = server.enroll_ipads(4)
    broken = sims[2].udid

    def name_them(session, devices):  # not critical: its failure is confined to its SAVEPOINT
        for device in devices:
            if device.udid == broken:
                raise RuntimeError("a subscriber that cannot handle this iPad")
            device.device_name = "named by the test"

    server.hooks.subscribe("devices.enrolled", name_them, name="test.name_them")
    assert provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher) == \
        {"provisioned": 4, "failed": 0}
    with server.session() as s:
        names = dict(s.execute(select(Device.udid, Device.device_name)).all())
    for sim in sims:
        assert _provisioned(server, sim.udid) == DONE  # every other subscriber did its work for all four
        assert (names[sim.udid] == "named by the test") is (sim.udid != broken), names


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_passes_at_once_never_provision_an_ipad_twice(server, lost_tasks):
    sims = server.enroll_ipads(8)
    start = threading.Barrier(3)
    results = []

    def run():
        start.wait()
        results.append(provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher,
                                                      batch=2))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r["provisioned"] for r in results) == 8 and not any(r["failed"] for r in results), results
    for sim in sims:
        assert _provisioned(server, sim.udid) == DONE  # one peer, one "enrolled" transition each


@both
def test_one_broken_enrollment_does_not_hold_back_the_others(server, lost_tasks):
    sims = server.enroll_ipads(4)
    broken = sims[1].udid

    def fail_for_one(session, devices):
        if any(d.udid == broken for d in devices):
            raise RuntimeError("a subscriber that cannot handle this iPad")

    server.hooks.subscribe("devices.enrolled", fail_for_one, name="test.fail_for_one", critical=True)
    counts = provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher)
    assert counts == {"provisioned": 3, "failed": 1}
    assert _provisioned(server, broken) == NOT_YET  # rolled back whole, still marked for the sweep
    for sim in sims:
        if sim.udid != broken:
            assert _provisioned(server, sim.udid) == DONE
    # Once the cause is gone, the next sweep provisions it.
    server.hooks._subscribers["devices.enrolled"] = [
        s for s in server.hooks._subscribers["devices.enrolled"] if s.name != "test.fail_for_one"]
    assert provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher) == \
        {"provisioned": 1, "failed": 0}
    assert _provisioned(server, broken) == DONE


@both
def test_answers_that_arrive_before_the_pass_count_and_older_ones_do_not(server, lost_tasks):
    import datetime as dt

    from ipad_mdm.jobs import task

    officer = server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"})
    officer.post("/api/v1/policies", json={
        "name": "Passcode", "rules": [{"kind": "passcode_present"}], "actions": [], "grace_hours": 0,
        "assign": {"all": True}}).raise_for_status()
    sim = server.enroll_ipads(1)[0]
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        device_id, completed = device.id, device.enrollment_completed_at
        assert completed is not None and device.provision_pending
        # What an earlier enrollment of this iPad left (before a wipe): it must not vouch for it now.
        device.security_info = {"PasscodePresent": True, "PasscodeCompliant": True}
        device.security_info_at = completed - dt.timedelta(days=1)
    # Evaluated before its pass (any evaluation may come first): the old answer does not count.
    task("compliance.evaluate_device").run(server.runtime, device_id)
    with server.session() as s:
        verdict = s.get(DeviceVerdict, device_id)
        assert verdict.state == "unknown" and verdict.inventory_since == completed
        assert "No SecurityInfo inventory reported yet" in verdict.reasons_en
    # The iPad answers its inventory queries (queued by the TokenUpdate itself) before the pass
    # runs: those answers count.
    sim.process_commands()
    server.wait_pushes()
    with server.session() as s:
        verdict = s.get(DeviceVerdict, device_id)
        assert verdict.state == "compliant" and verdict.inventory_since == completed
    assert provisioning.provision_pending(server.instance.database, server.hooks, server.dispatcher) == \
        {"provisioned": 1, "failed": 0}
    with server.session() as s:
        verdict = s.get(DeviceVerdict, device_id)
        assert verdict.state == "compliant" and verdict.inventory_since == completed
