"""A compliance pass carries out the VPN cuts of all its transitions at once (Hooks.emit_many, the VPN
package's batch handler) — and records exactly what cutting device by device records.

Two identical offices (the real app's hooks: VPN, gateway, webhooks) are evaluated by the bulk pass at
the same moments: one with the VPN's batch handler, one with it taken away, so every transition goes
through the VPN's one-device handler as an emit would. The transitions' recorded actions, the peers'
and certificates' states and the VPN history must be the same. Then the batch fails as a whole and
the pass falls back, device by device, to the same outcome.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets

import pytest
from sqlalchemy import insert, select

import vpn.service
from compliance import bulk, clock
from compliance.action_specs import validate_actions
from compliance.models import DeviceVerdict, Policy, VerdictTransition
from compliance.rules import validate_rules
from ipad_mdm.app import create_app
from ipad_mdm.config import load_settings
from ipad_mdm.db import Base, Database, after_commit, savepoint, utcnow
from ipad_mdm.hooks import Hooks
from ipad_mdm.instance import open_instance
from ipad_mdm.packages import import_all_models
from mdm.models import Device, IdentityCertificate
from tests.conftest import fresh_postgres_database
from vpn import serverconf
from vpn.models import VpnCertificate, VpnEvent, VpnInstallation, WireGuardPeer

N = 36


class Recorder:
    """A dispatcher that keeps what it was asked (the production job passes one)."""

    def __init__(self):
        self.submitted: list[tuple] = []

    def submit(self, name, *args):
        self.submitted.append((name, *args))
        return True

    def submit_soon(self, name, within):
        return self.submit(name)

    def request_push(self, ids):
        return True


def office(tmp_path, name: str, url: str):
    inst = open_instance(load_settings(tmp_path / name, database_url=url, base_url="https://127.0.0.1:9"))
    app = create_app(inst=inst, dispatcher=Recorder())
    now = utcnow()
    with inst.database.session() as s:
        for p in s.scalars(select(Policy)):
            p.assign_all = False  # the seeded baseline: only this test's policy judges
        s.add(Policy(name="VPN", rules=validate_rules([{"kind": "passcode_present"}]),
                     actions=validate_actions(["notify", "cut_vpn", "block_gateway"]),
                     grace_hours=0, escalation_hours=48, assign_all=True))
    rows = [dict(udid=f"CUT-{i:03d}", enrollment_state="enrolled", enrolled_at=now, last_seen_at=now,
                 enrollment_completed_at=now - dt.timedelta(minutes=1), push_pending=False, push_failures=0,
                 awaiting_configuration=False, security_info={"PasscodePresent": i % 6 == 5}, security_info_at=now)
            for i in range(N)]
    with inst.database.engine.begin() as conn:
        conn.execute(insert(Device), rows)
        ids = [r[0] for r in conn.execute(select(Device.id).order_by(Device.id))]
        conn.execute(insert(IdentityCertificate), [dict(
            serial=f"{d:x}", sha256_fingerprint=f"{d:064x}", subject=f"CN={d}", not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=365), der=b"x", device_id=d, issued_at=now) for d in ids])
        peers, certs, installed = [], [], []
        for i, d in enumerate(ids):
            kind = i % 6  # 0 peer, 1 peer cut by hand, 2 nothing but an installed VPN, 3 removed peer + IKEv2,
            #              4 a provider's certificate and two installed VPNs, 5 compliant (with a peer)
            if kind in (0, 1, 3, 5):
                peers.append(dict(device_id=d, public_key=f"{i:043d}=", address_v4=f"10.77.0.{i + 2}",
                                  state={1: "cut", 3: "removed"}.get(kind, "active"),
                                  cut_by="manual" if kind == 1 else None, created_at=now, updated_at=now))
            if kind == 3:
                certs += [dict(device_id=d, serial=secrets.token_hex(8), sha256_fingerprint=secrets.token_hex(32),
                               local_identifier=f"ike{i}", not_after=now + dt.timedelta(days=90), state=state,
                               issued_at=now, provider_key=None) for state in ("removed", "active")]
            if kind == 4:
                certs.append(dict(device_id=d, serial=secrets.token_hex(8), sha256_fingerprint=secrets.token_hex(32),
                                  local_identifier=f"acme{i}", not_after=now + dt.timedelta(days=90), state="active",
                                  issued_at=now, provider_key="acme"))
            if kind in (2, 4):
                installed += [dict(device_id=d, profile_identifier=f"p.{key}", provider_key=key, first_seen_at=now,
                                   last_seen_at=now) for key in (("other",) if kind == 2 else ("acme", "other"))]
        conn.execute(insert(WireGuardPeer), peers)
        conn.execute(insert(VpnCertificate), certs)
        conn.execute(insert(VpnInstallation), installed)
    return inst, app.extensions["ipad_mdm.hooks"], app.extensions


def recorded(inst) -> tuple:
    with inst.database.session() as s:
        udid = dict(s.execute(select(Device.id, Device.udid)).all())
        transitions = [(udid[t.device_id], t.from_state, t.to_state, t.actions_pending,
                        sorted((a["action"], a.get("subscriber"), a.get("status"), a.get("result"),
                                tuple(a.get("providers") or ()), tuple(a.get("not_cut") or ())) for a in t.actions))
                       for t in s.scalars(select(VerdictTransition).order_by(VerdictTransition.device_id,
                                                                             VerdictTransition.id))]
        peers = sorted((udid[p.device_id], p.state, p.cut_by, p.reason) for p in s.scalars(select(WireGuardPeer)))
        certs = sorted((udid[c.device_id], c.provider_key or "", c.state, c.cut_by or "", c.reason or "")
                       for c in s.scalars(select(VpnCertificate)))
        events = sorted((udid[e.device_id], e.kind, e.event, e.reason, e.by, e.address or "")
                        for e in s.scalars(select(VpnEvent)))
        states = sorted((udid[v.device_id], v.state) for v in s.scalars(select(DeviceVerdict)))
    return transitions, peers, certs, events, states


def assert_cuts_name_what_peer_status_shows(inst) -> None:
    """The kinds of access a cut reports (read from the rows it cut) are the ones the device detail
    shows (vpn.peer_status): the WireGuard peer, the latest IKEv2 certificate, each provider's,
    unless removed."""
    checked = 0
    with inst.database.session() as s:
        for t in s.scalars(select(VerdictTransition)):
            for action in t.actions:
                if action["action"] == "cut_vpn" and action.get("result") == "cut":
                    status = vpn.service.peer_status(s, s.get(Device, t.device_id))
                    shown = [k for k in ("wireguard", "ikev2") if k in status and status[k]["state"] != "removed"]
                    assert action["providers"] == shown + [p["provider"] for p in status.get("providers", ())]
                    checked += 1
    assert checked >= 3


def without_batch(hooks: Hooks) -> None:
    subs = hooks._subscribers["verdict.changed"]
    subs[:] = [dataclasses.replace(sub, batch=None) for sub in subs]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_pass_cuts_in_one_batch_what_device_by_device_cutting_records(tmp_path, monkeypatch, dialect):
    with contextlib.ExitStack() as stack:
        urls = ([f"sqlite:///{tmp_path / 'a.sqlite3'}", f"sqlite:///{tmp_path / 'b.sqlite3'}"] if dialect == "sqlite"
                else [stack.enter_context(fresh_postgres_database()) for _ in range(2)])
        batched, b_hooks, _ = office(tmp_path, "a", urls[0])
        single, s_hooks, _ = office(tmp_path, "b", urls[1])
        without_batch(s_hooks)
        calls = []
        real = vpn.service.cut_peers
        monkeypatch.setattr("vpn.cut_peers", lambda *a, **kw: calls.append(len(a[2])) or real(*a, **kw))
        start = utcnow()
        for i, at in enumerate([start, start + dt.timedelta(minutes=5), start + dt.timedelta(hours=49)]):
            monkeypatch.setattr(clock, "now", lambda at=at: at)
            if i == 2:  # two iPads get their passcode back: a restore beside the escalations
                for inst in (batched, single):
                    with inst.database.session() as s:
                        for d in s.scalars(select(Device).where(Device.udid.in_(["CUT-000", "CUT-006"]))):
                            d.security_info, d.security_info_at = {"PasscodePresent": True}, utcnow()
            counts = [bulk.evaluate_all(inst.database, hooks, dispatcher=Recorder())
                      for inst, hooks in ((batched, b_hooks), (single, s_hooks))]
            assert counts[0] == counts[1]
            assert recorded(batched) == recorded(single), f"batched and device-by-device cuts differ at moment {i}"
            if i == 0:
                assert_cuts_name_what_peer_status_shows(batched)
        transitions, peers, _certs, events, states = recorded(batched)
        batched.database.dispose()
        single.database.dispose()
    # The comparison did its work: cuts, a manual cut left alone, restores, escalations, no VPN.
    assert calls and max(calls) > 1
    cuts = {(t[0], a[3]) for t in transitions for a in t[4] if a[0] == "cut_vpn"}
    assert ("CUT-000", "cut") in cuts and ("CUT-000", "restored") in cuts and ("CUT-002", "no VPN access") in cuts
    assert not [e for e in events if e[0] == "CUT-001"]
    assert ("CUT-001", "cut", "manual", None) in peers
    assert ("CUT-003", "ikev2", "cut", "compliance verdict non_compliant", "compliance", "") in events
    assert ("CUT-004", "acme", "cut", "compliance verdict non_compliant", "compliance", "") in events
    # What the cut could not reach is named: the other VPN installed on the iPad.
    assert {(t[0], a[4], a[5]) for t in transitions for a in t[4] if a[0] == "cut_vpn" and t[0] == "CUT-004"} == {
        ("CUT-004", ("acme",), ("other",))}
    assert ("CUT-001", "blocked") in states and ("CUT-000", "compliant") in states


def test_a_batch_that_fails_falls_back_to_one_device_at_a_time(tmp_path, monkeypatch):
    inst, hooks, _ = office(tmp_path, "a", f"sqlite:///{tmp_path / 'a.sqlite3'}")
    ref, ref_hooks, _ = office(tmp_path, "b", f"sqlite:///{tmp_path / 'b.sqlite3'}")
    without_batch(ref_hooks)

    real = vpn.service.cut_peers

    def broken(session, instance, cuts, **kw):  # fails for a batch, works one device at a time
        if len(cuts) > 1:
            raise RuntimeError("gateway unreachable")
        return real(session, instance, cuts, **kw)

    monkeypatch.setattr("vpn.cut_peers", broken)
    bulk.evaluate_all(inst.database, hooks, dispatcher=Recorder())
    bulk.evaluate_all(ref.database, ref_hooks, dispatcher=Recorder())
    assert recorded(inst) == recorded(ref)
    with inst.database.session() as s:
        assert s.scalar(select(WireGuardPeer.state).where(WireGuardPeer.public_key == f"{0:043d}=")) == "cut"

    # One device whose cut fails: only its action is recorded as failed (and retried later).
    def one_fails(session, instance, cuts, **kw):
        if any(device.udid == "CUT-012" for device, _reason in cuts):
            raise RuntimeError("gateway unreachable")
        return real(session, instance, cuts, **kw)

    monkeypatch.setattr("vpn.cut_peers", one_fails)
    other, other_hooks, _ = office(tmp_path, "c", f"sqlite:///{tmp_path / 'c.sqlite3'}")
    bulk.evaluate_all(other.database, other_hooks, dispatcher=Recorder())
    transitions = recorded(other)[0]
    failed = [t[0] for t in transitions if t[3]]
    assert failed == ["CUT-012"]
    assert [a[2] for a in next(t for t in transitions if t[0] == "CUT-012")[4] if a[0] == "cut_vpn"] == ["failed"]
    for db in (inst, ref, other):
        db.database.dispose()


def test_emit_many_gives_each_item_what_emit_gives(tmp_path):
    import_all_models()
    db = Database(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    Base.metadata.create_all(db.engine)
    hooks, seen = Hooks(), []
    hooks.subscribe("verdict.changed", lambda session, device, previous, verdict: {"one": device},
                    name="single")

    def batch(session, items):
        seen.append([it["device"] for it in items])
        if any(it["device"] == "boom" for it in items):
            raise RuntimeError("batch failed")
        return [{"many": it["device"]} for it in items]

    def one(session, device, previous, verdict):
        if device == "boom":
            raise RuntimeError("this one fails")
        return {"alone": device}

    hooks.subscribe("verdict.changed", one, name="batched", when=lambda device, **_: device != "skip", batch=batch)
    items = [{"device": d, "previous": None, "verdict": None} for d in ("a", "skip", "b")]
    with db.session() as s:
        out = hooks.emit_many("verdict.changed", items, session=s)
        assert out == [[{"subscriber": "single", "status": "done", "one": "a"},
                        {"subscriber": "batched", "status": "done", "many": "a"}],
                       [{"subscriber": "single", "status": "done", "one": "skip"},
                        {"subscriber": "batched", "status": "not_applicable"}],
                       [{"subscriber": "single", "status": "done", "one": "b"},
                        {"subscriber": "batched", "status": "done", "many": "b"}]]
        assert seen == [["a", "b"]]
        out = hooks.emit_many("verdict.changed", [{"device": d, "previous": None, "verdict": None}
                                                  for d in ("a", "boom")], session=s)
        assert [o[1]["status"] for o in out] == ["done", "failed"] and out[0][1]["alone"] == "a"
        assert "this one fails" in out[1][1]["detail"]
    db.dispose()


def test_a_regeneration_asked_for_in_a_savepoint_that_rolled_back_still_runs_once(tmp_path, monkeypatch):
    """Asked once per transaction (a pass cutting a thousand peers regenerates once, not a thousand
    times), and a savepoint rolled back does not cancel it for the rest of the transaction."""
    db = Database(f"sqlite:///{tmp_path / 's.sqlite3'}")
    import_all_models()
    Base.metadata.create_all(db.engine)
    runs = []
    monkeypatch.setattr(serverconf, "_sync_logged", lambda instance: runs.append(instance))
    with db.session() as s:
        with contextlib.suppress(RuntimeError), savepoint(s):
            serverconf.sync_after_commit(s, "inst")
            raise RuntimeError("this device's cut is undone")
        for _ in range(3):
            with savepoint(s):
                serverconf.sync_after_commit(s, "inst")
        after_commit(s, lambda: runs.append("other"))
    assert runs == ["inst", "other"]
    db.dispose()


def test_gateway_changes_noted_in_a_rolled_back_savepoint_are_not_sent_and_later_ones_are(tmp_path, monkeypatch):
    """A removal sent for a cut that was undone would take a live peer off the gateways; a change noted
    after that SAVEPOINT rolled back must still reach them."""
    from vpn import gateways

    db = Database(f"sqlite:///{tmp_path / 'g.sqlite3'}")
    import_all_models()
    Base.metadata.create_all(db.engine)
    sent = []
    monkeypatch.setattr(gateways, "_send_logged", lambda instance, ids, keys: sent.append((ids, keys)))
    with db.session() as s:
        with contextlib.suppress(RuntimeError), savepoint(s):
            gateways.note(s, "inst", remove=("undone=",))
            raise RuntimeError("this device's cut is undone")
        with savepoint(s):
            gateways.note(s, "inst", remove=("cut=",))
            gateways.note(s, "inst", upsert=(7,))
        gateways.note(s, "inst", remove=("manual=",))
    assert sorted(sent) == [([], ["manual="]), ([7], ["cut="])]
    db.dispose()
