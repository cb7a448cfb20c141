"""Compliance end to end: real HTTPS server, the simulated iPad, the real API.

Time is moved by patching compliance.clock.now (the clock deadlines are checked
against) and calling the scheduled job directly; nothing sleeps.
"""
from __future__ import annotations

import base64
import datetime as dt

import pytest
from sqlalchemy import select

import compliance
from compliance import clock, jobs
from compliance.models import VerdictTransition
from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit
from mdm.models import Command, Device
from document_gateway.access import verdict_access
from tests.conftest import retire_baseline_policy

H = dt.timedelta(hours=1)




@pytest.fixture
def officer(server):
    client = server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"})
    yield client
    client.close()


@pytest.fixture
def admin(server):
    client = server.http(headers={"Authorization": f"Bearer {server.api_token('it_admin')}"})
    yield client
    client.close()


@pytest.fixture
def freeze(monkeypatch):
    """freeze(t) makes compliance see `t` as now."""

    def set_now(t):
        monkeypatch.setattr(clock, "now", lambda: t)
        return t

    return set_now


def make_policy(officer, **body):
    retire_baseline_policy(officer)
    body.setdefault("name", "Chính sách cơ bản")
    body.setdefault("assign", {"all": True})
    r = officer.post("/api/v1/policies", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def refresh(admin, sim, *kinds):
    """IT asks for inventory through the API; the iPad answers over HTTPS."""
    for kind in kinds or ("SecurityInfo",):
        r = admin.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": kind})
        assert r.status_code == 201, r.text
    return sim.process_commands()


def verdict(server, sim):
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        return compliance.current_verdict(s, device.id)


def history(server, sim):
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        return list(s.scalars(select(VerdictTransition).where(VerdictTransition.device_id == device.id)
                              .order_by(VerdictTransition.id)))


def run_schedule(server):
    return jobs.evaluate_all(server.runtime)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_full_escalation_lifecycle(server, enrolled, officer, admin, notifier, freeze):
    sim = enrolled
    changes = []
    server.hooks.subscribe("verdict.changed", lambda session, device, previous, verdict: changes.append(
        (previous.state if previous else None, verdict.state, verdict.cut_vpn)))
    policy = make_policy(officer, rules=[{"kind": "min_os_version", "version": "17.0"}, {"kind": "passcode_present"}],
                         actions=["notify", "cut_vpn", "block_gateway", "lock_device",
                                  {"type": "lost_mode", "phone_number": "02438012345"}],
                         grace_hours=24, escalation_hours=48)
    refresh(admin, sim)
    assert verdict(server, sim).state == "compliant"
    changes.clear()

    # The leader removes the passcode; the next SecurityInfo starts the grace period.
    sim.state.passcode_present = False
    before = utcnow()
    refresh(admin, sim)
    v = verdict(server, sim)
    assert v.state == "grace"
    assert before + 24 * H <= v.deadline <= utcnow() + 24 * H
    assert v.reasons_vi == ("Thiết bị chưa đặt mật mã mở khoá",)
    assert v.reasons_en == ("No passcode is set on the device",)
    assert v.failing_rules[0]["rule"] == "passcode_present"
    assert v.failing_rules[0]["policies"] == [{"policy_id": policy["id"], "version": 1}]
    assert v.policy_versions[0]["version"] == 1
    assert verdict_access(v, v.deadline - H).allowed and not verdict_access(v, v.deadline + H).allowed
    assert not v.cut_vpn
    grace_deadline = v.deadline

    # The API shows the same verdict.
    r = officer.get(f"/api/v1/devices/{sim.udid}/verdict")
    assert r.status_code == 200 and r.json()["state"] == "grace"
    # The gateway's own decision, not a second opinion: a grace device may read, but this one has
    # no leader assigned yet.
    assert r.json()["document_access"] is False and r.json()["document_access_reason"] == "not_assigned"
    assert admin.get(f"/api/v1/devices/{sim.udid}").json()["verdict"]["state"] == "grace"

    # Before the deadline the schedule changes nothing.
    freeze(grace_deadline - H)
    run_schedule(server)
    assert verdict(server, sim).state == "grace"

    # Deadline passed, nothing fixed: non_compliant; escalation counts from the grace deadline.
    freeze(grace_deadline + H)
    run_schedule(server)
    v = verdict(server, sim)
    assert v.state == "non_compliant" and v.cut_vpn
    assert v.escalation_deadline == grace_deadline + 48 * H
    run_schedule(server)  # idempotent
    assert [t.to_state for t in history(server, sim)][-2:] == ["grace", "non_compliant"]

    # Second deadline passed: blocked, DeviceLock + EnableLostMode queued exactly once.
    freeze(grace_deadline + 49 * H)
    run_schedule(server)
    run_schedule(server)
    assert verdict(server, sim).state == "blocked"
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        cmds = list(s.scalars(select(Command).where(Command.device_id == device.id,
                                                    Command.requested_by == "compliance")))
    assert sorted(c.request_type for c in cmds) == ["DeviceLock", "EnableLostMode"]
    server.wait_pushes()
    handled = sim.process_commands()
    lost = next(c["Command"] for c in handled if c["Command"]["RequestType"] == "EnableLostMode")
    assert "Chế độ mất" in lost["Message"] and lost["PhoneNumber"] == "02438012345"
    assert sim.state.lost_mode is True
    assert verdict(server, sim).state == "blocked"

    # IT releases Lost Mode, the leader sets a passcode: compliant again.
    refresh(admin, sim, "DisableLostMode")
    assert verdict(server, sim).state == "blocked"
    sim.state.passcode_present = True
    refresh(admin, sim)
    v = verdict(server, sim)
    assert v.state == "compliant" and v.reasons_en == () and v.deadline is None

    rows = history(server, sim)
    # Enrolled under the shipped baseline policy: unknown until its inventory arrived, then compliant.
    assert [(t.from_state, t.to_state) for t in rows] == [
        (None, "unknown"), ("unknown", "compliant"), ("compliant", "grace"), ("grace", "non_compliant"),
        ("non_compliant", "blocked"), ("blocked", "compliant")]
    acts = {t.to_state: {a["action"]: a for a in t.actions} for t in rows[2:]}
    assert set(acts["grace"]) == {"notify", "verdict.changed"}
    # The VPN package carried out the cut: its own outcome, not "requested".
    assert (acts["non_compliant"]["cut_vpn"]["status"], acts["non_compliant"]["cut_vpn"]["result"]) == ("done", "cut")
    assert acts["non_compliant"]["block_gateway"]["status"] == "deny"
    assert "lock_device" not in acts["non_compliant"]
    assert acts["blocked"]["lock_device"]["status"] == "enqueued"
    assert acts["blocked"]["lost_mode"]["command"] == "EnableLostMode"
    assert (acts["compliant"]["cut_vpn"]["status"], acts["compliant"]["cut_vpn"]["result"]) == ("done", "restored")
    assert all(not t.actions_pending for t in rows)
    assert acts["compliant"]["block_gateway"]["status"] == "allow"
    assert rows[0].trigger == "enrolled"  # before this test's policy existed
    # Evaluated once per inventory refresh, on its last answer (the enrollment batch ends with the app list).
    assert rows[1].trigger == "inventory:InstalledApplicationList"
    assert rows[2].trigger == "inventory:SecurityInfo" and rows[3].trigger == "schedule"
    assert rows[3].at == grace_deadline + H and rows[3].at.tzinfo is not None
    assert rows[3].reasons_vi == ["Thiết bị chưa đặt mật mã mở khoá"]
    assert rows[3].policy_versions == [{"policy_id": policy["id"], "version": 1, "name": policy["name"]}]

    assert changes == [("compliant", "grace", False), ("grace", "non_compliant", True),
                       ("non_compliant", "blocked", True), ("blocked", "compliant", False)]
    # Delivered over SMTP to the security officers, one mail per transition, in Vietnamese first.
    mails = notifier.wait_for(4)
    assert [m.subject.rsplit("→ ", 1)[1] for m in mails] == ["grace", "non_compliant", "blocked", "compliant"]
    assert all(m.recipients == ["attt@vpcp.gov.vn"] and m.sender == "ipad-mdm@vpcp.gov.vn" for m in mails)
    assert "Thiết bị chưa đặt mật mã mở khoá" in mails[0].body and "tuân thủ → trong thời hạn khắc phục" in mails[0].subject
    assert sim.udid in mails[0].body
    unlock = sim.unlock_token
    assert not any(unlock in m.raw or base64.b64encode(unlock) in m.raw for m in mails)

    r = officer.get(f"/api/v1/devices/{sim.udid}/verdict-history")
    assert [t["to"] for t in r.json()["transitions"]][-4:] == ["grace", "non_compliant", "blocked", "compliant"]
    r = officer.get(f"/api/v1/devices/{sim.udid}/verdict-history",
                    params={"since": (grace_deadline + 48 * H).isoformat()})
    assert [t["to"] for t in r.json()["transitions"]] == ["blocked", "compliant"]


def test_unknown_until_security_info(server, officer):
    make_policy(officer, rules=[{"kind": "passcode_present"}, {"kind": "min_os_version", "version": "17.0"}])
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()  # the new enrollment's provisioning pass (mdm.provisioning) gives it its first verdict
    v = verdict(server, sim)
    assert v.state == "unknown"
    assert "No SecurityInfo inventory reported yet" in v.reasons_en
    assert not verdict_access(v).allowed
    sim.process_commands()
    assert verdict(server, sim).state == "compliant"
    sim.close()


def test_silent_device_turns_non_compliant_on_schedule(server, enrolled, officer, admin, freeze):
    make_policy(officer, rules=[{"kind": "last_checkin_within_hours", "hours": 24}], grace_hours=72,
                actions=["cut_vpn"])
    refresh(admin, enrolled)
    assert verdict(server, enrolled).state == "compliant"
    freeze(utcnow() + 23 * H)
    run_schedule(server)
    assert verdict(server, enrolled).state == "compliant"
    freeze(utcnow() + 25 * H)  # the iPad sends nothing at all
    run_schedule(server)
    v = verdict(server, enrolled)
    assert v.state == "non_compliant"  # no grace: the 24 h window is the tolerance
    assert "No check-in for more than 24 hours" in v.reasons_en[0]
    assert history(server, enrolled)[-1].trigger == "schedule"


def test_immediate_rules_and_zero_grace(server, enrolled, officer, admin):
    make_policy(officer, rules=[{"kind": "not_in_lost_mode"}, {"kind": "disallowed_apps", "bundle_ids": ["com.game.x"]}],
                grace_hours=48)
    enrolled.state.apps.append({"Identifier": "com.game.x", "Name": "Game", "Version": "1", "ShortVersion": "1"})
    refresh(admin, enrolled, "InstalledApplicationList")
    assert verdict(server, enrolled).state == "grace"  # an app is fixable: grace applies
    r = admin.post(f"/api/v1/devices/{enrolled.udid}/commands",
                   json={"request_type": "EnableLostMode", "params": {"Message": "Mất máy"}})
    assert r.status_code == 201
    enrolled.process_commands()
    v = verdict(server, enrolled)
    assert v.state == "non_compliant"  # Lost Mode is immediate: grace cut short
    assert "The device is in Lost Mode" in v.reasons_en


def test_grace_zero_goes_straight_to_non_compliant(server, enrolled, officer, admin):
    make_policy(officer, rules=[{"kind": "min_os_version", "version": "26.0"}], grace_hours=0)
    refresh(admin, enrolled, "DeviceInformation")
    v = verdict(server, enrolled)
    assert v.state == "non_compliant"
    assert v.reasons_vi == ("Phiên bản iPadOS 18.1 thấp hơn mức tối thiểu 26.0",)
    assert v.reasons_en == ("iPadOS 18.1 is below the minimum 26.0",)


def test_checkout_is_immediately_non_compliant(server, enrolled, officer):
    make_policy(officer, rules=[{"kind": "passcode_present"}], actions=["cut_vpn"])
    enrolled.checkout()
    v = verdict(server, enrolled)
    assert v.state == "non_compliant" and v.cut_vpn
    assert history(server, enrolled)[-1].trigger == "checked_out"


def test_strictest_union_of_two_policies(server, officer, admin):
    with server.session() as s:
        s.add(Unit(code="VP-PILOT-1", name_vi="Vụ Tổng hợp", name_en="General Affairs"))
    a = make_policy(officer, name="Toàn văn phòng", rules=[{"kind": "min_os_version", "version": "17.0"},
                                                          {"kind": "passcode_present"}],
                    grace_hours=72, escalation_hours=None, assign={"all": True})
    b = make_policy(officer, name="Đơn vị thí điểm", rules=[{"kind": "min_os_version", "version": "19.0"},
                                                          {"kind": "required_profiles", "identifiers": ["vn.gov.vpcp.vpn"]}],
                    grace_hours=4, escalation_hours=8, assign={"all": False, "units": ["VP-PILOT-1"]})
    pilot = server.simulator()
    pilot.enroll(server.enrollment_url(unit_code="VP-PILOT-1"))
    other = server.simulator()
    other.enroll(server.enrollment_url())
    server.wait_pushes()
    pilot.process_commands()
    other.process_commands()

    v = verdict(server, pilot)
    assert v.state == "grace"
    assert v.grace_deadline - v.failing_since == 4 * H  # the shortest grace
    assert set(v.reasons_en) == {"iPadOS 18.1 is below the minimum 19.0",
                                 "Required configuration profile(s) missing: vn.gov.vpcp.vpn"}
    os_rule = next(f for f in v.failing_rules if f["rule"] == "min_os_version")
    assert {p["policy_id"] for p in os_rule["policies"]} == {a["id"], b["id"]}
    assert {p["policy_id"] for p in v.policy_versions} == {a["id"], b["id"]}
    assert verdict(server, other).state == "compliant"  # only the office-wide policy applies
    pilot.close()
    other.close()


def test_policy_versioning(server, enrolled, officer, admin):
    p = make_policy(officer, rules=[{"kind": "min_os_version", "version": "17.0"}], description="v1")
    assert p["version"] == 1 and [v["version"] for v in p["versions"]] == [1]
    r = officer.put(f"/api/v1/policies/{p['id']}",
                    json={"version": 1, "rules": [{"kind": "min_os_version", "version": "18.2"}], "grace_hours": 12})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    stale = officer.put(f"/api/v1/policies/{p['id']}", json={"version": 1, "description": "lost update"})
    assert stale.status_code == 409 and "version 2" in stale.json()["error"]
    with server.session() as s:
        s.add(Unit(code="VP-2", name_vi="Vụ 2"))
    r = officer.post(f"/api/v1/policies/{p['id']}/assign", json={"all": False, "units": ["VP-2"]})
    assert r.json()["version"] == 3 and r.json()["assign"] == {"all": False, "units": ["VP-2"]}
    r = officer.post(f"/api/v1/policies/{p['id']}/assign", json={"all": True})
    detail = officer.get(f"/api/v1/policies/{p['id']}").json()
    assert [(v["version"], v["change"]) for v in detail["versions"]] == [
        (1, "created"), (2, "updated"), (3, "assigned"), (4, "assigned")]
    assert detail["versions"][0]["rules"] == [{"kind": "min_os_version", "version": "17.0"}]
    assert detail["versions"][1]["grace_hours"] == 12
    refresh(admin, enrolled, "DeviceInformation")
    v = verdict(server, enrolled)
    assert v.state == "grace" and v.policy_versions[0]["version"] == 4
    assert v.failing_rules[0]["policies"] == [{"policy_id": p["id"], "version": 4}]
    listing = officer.get("/api/v1/policies").json()["policies"]
    assert [x["id"] for x in listing] == [p["id"]]
    assert officer.delete(f"/api/v1/policies/{p['id']}").json()["deleted_at"] is not None
    assert officer.get("/api/v1/policies").json()["policies"] == []
    # Reading is allowed to auditors; writing is not.
    auditor = server.http(headers={"Authorization": f"Bearer {server.api_token('auditor')}"})
    assert auditor.get(f"/api/v1/policies/{p['id']}").status_code == 200
    assert auditor.post("/api/v1/policies", json={}).status_code == 403
    auditor.close()


@pytest.mark.parametrize("body,needle", [
    ({"rules": [{"kind": "passcode_present"}]}, "name is required"),
    ({"name": "x"}, "rules is required"),
    ({"name": "x", "rules": [{"kind": "min_os"}]}, "rules[0].kind: unknown rule kind 'min_os'"),
    ({"name": "x", "rules": [{"kind": "min_os_version", "version": "seventeen"}]},
     "rules[0] (min_os_version).version must be a version like 17.0"),
    ({"name": "x", "rules": [{"kind": "min_os_version"}]}, "missing required key(s) version"),
    ({"name": "x", "rules": [{"kind": "passcode_present", "length": 6}]}, "unknown key(s) length"),
    ({"name": "x", "rules": [{"kind": "last_checkin_within_hours", "hours": 0}]}, "hours must be an integer between 1"),
    ({"name": "x", "rules": [{"kind": "disallowed_apps", "bundle_ids": []}]}, "bundle_ids must be a non-empty list"),
    ({"name": "x", "rules": [{"kind": "min_os_version", "version": "18.0"}, {"kind": "max_os_version", "version": "17.0"}]},
     "min_os_version is above max_os_version"),
    ({"name": "x", "rules": [{"kind": "passcode_present"}], "grace_hours": -1}, "grace_hours must be an integer"),
    ({"name": "x", "rules": [{"kind": "passcode_present"}], "actions": ["explode"]}, "unknown action 'explode'"),
    ({"name": "x", "rules": [{"kind": "passcode_present"}], "assign": {"units": ["NOPE"]}}, "unknown unit code 'NOPE'"),
    ({"name": "x", "rules": [{"kind": "passcode_present"}], "colour": "red"}, "unknown field(s) colour"),
])
def test_bad_policy_input_is_400_naming_the_problem(server, officer, body, needle):
    r = officer.post("/api/v1/policies", json=body)
    assert r.status_code == 400
    assert needle in r.json()["error"]


def test_request_inventory_job(server, enrolled, monkeypatch, freeze):
    monkeypatch.setenv("IPAD_MDM_INVENTORY_INTERVAL_HOURS", "6")
    freeze(utcnow() + 5 * H)
    assert jobs.request_inventory(server.runtime) == []
    freeze(utcnow() + 7 * H)
    pushes_before = len(server.apns.pushes)
    ids = jobs.request_inventory(server.runtime)
    assert len(ids) == 1
    server.wait_pushes()
    assert len(server.apns.pushes) == pushes_before + 1
    # Already queued and pushed: neither duplicate commands nor another push.
    assert jobs.request_inventory(server.runtime) == []
    with server.session() as s:
        queued = [c.request_type for c in s.scalars(select(Command).where(Command.status == "queued",
                                                                           Command.requested_by == "compliance:inventory"))]
    assert sorted(queued) == sorted(["DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList",
                                     "InstalledApplicationList"])
    handled = [c["Command"]["RequestType"] for c in enrolled.process_commands()]
    assert set(queued) <= set(handled)


def test_verdict_api_404_and_not_evaluated(server, officer):
    assert officer.get("/api/v1/devices/NOPE/verdict").status_code == 404
    assert officer.get("/api/v1/devices/NOPE/verdict-history").status_code == 404
