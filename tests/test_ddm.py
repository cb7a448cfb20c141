"""Declarative device management end to end: a simulated iPad enrolls over HTTPS, the server
turns DDM on, the iPad syncs declarations, reports status, and compliance follows its status
reports live (gateway refusal without any command round trip)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from mdm import Device, StatusReportRecord
from tests.conftest import start_live_server
from tests.test_gateway import api, enroll, ipad_client, make_unit, upload, verdict_state
from tests.test_vpn import config_peers, peer_row

PASSCODE = {"identifier": "vpcp.passcode", "type": "passcode.settings", "display_name": "Mật mã mở khoá",
            "payload": {"RequirePasscode": True, "MinimumLength": 6, "MaximumInactivityInMinutes": 5}}
UPDATE = {"identifier": "vpcp.ipados-18-2", "type": "softwareupdate.enforcement.specific",
          "display_name": "Cập nhật iPadOS 18.2",
          "payload": {"TargetOSVersion": "18.2", "TargetBuildVersion": "22C152",
                      "TargetLocalDateTime": "2099-12-31T17:00:00"}}


@pytest.fixture
def ddm_server(tmp_path, database_url):
    srv = start_live_server(tmp_path, database_url)
    try:
        yield srv
    finally:
        srv.stop()


def create(admin, spec, *, assign: dict | None = None):
    r = admin.post("/api/v1/declarations", json=spec)
    assert r.status_code == 201, r.text
    if assign is not None:
        r = admin.post(f"/api/v1/declarations/{spec['identifier']}/assign", json=assign)
        assert r.status_code == 200, r.text
    return r.json()


def policy(officer, rules, actions=("block_gateway",)):
    from tests.conftest import retire_baseline_policy

    retire_baseline_policy(officer)
    r = officer.post("/api/v1/policies", json={"name": "DDM", "rules": rules, "grace_hours": 0,
                                                 "assign": {"all": True}, "actions": list(actions)})
    assert r.status_code == 201, r.text


def device_row(server, udid) -> Device:
    with server.session() as s:
        d = s.scalar(select(Device).where(Device.udid == udid))
        s.expunge(d)
        return d


def report_count(server) -> int:
    with server.session() as s:
        return s.scalar(select(func.count()).select_from(StatusReportRecord))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_ddm_sync_status_and_live_gateway_refusal(ddm_server, tmp_path):
    server = ddm_server
    admin, officer = api(server, "it_admin"), api(server, "security_officer")
    make_unit(server, "TTTH", "Trung tâm Tin học")
    policy(officer, [{"kind": "passcode_present"}, {"kind": "passcode_compliant"}, {"kind": "os_update_deadline"},
                     {"kind": "declarations_active"}], actions=("block_gateway", "cut_vpn"))
    create(admin, PASSCODE, assign={"all": True})
    create(admin, UPDATE, assign={"all": True})

    sim = enroll(server)  # enrollment queues DeclarativeManagement; the iPad syncs and reports
    assert sim.ddm.enabled
    held = set(sim.ddm.declarations)
    assert {"vpcp.passcode", "vpcp.ipados-18-2", "vn.gov.ipadmdm.status-subscriptions"} <= held
    assert sim.ddm.subscriptions >= {"passcode.is-compliant", "device.operating-system.version",
                                     "softwareupdate.install-state", "management.declarations"}
    assert verdict_state(server, sim) == "compliant"
    row = device_row(server, sim.udid)
    assert row.ddm_enabled_at is not None
    assert row.ddm_status["passcode.is-present"]["value"] is True
    assert row.ddm_status["softwareupdate.pending-version"]["value"]["os-version"] == "18.2"

    # The states the iPad reports are visible per device.
    r = admin.get(f"/api/v1/devices/{sim.udid}/declarations")
    assert r.status_code == 200, r.text
    body = r.json()
    states = {d["identifier"]: d for d in body["declarations"]}
    assert states["vpcp.passcode"]["valid"] == "valid" and states["vpcp.passcode"]["active"] is True
    assert {d["identifier"] for d in body["set"]} == held
    assert body["status"]["softwareupdate.install-state"] == "downloading"

    # Same set: the device does not download again.
    fetched = len(sim.ddm.requests)
    assert sim.ddm_sync() is False
    assert sim.ddm.requests[fetched:] == ["tokens"]

    # A leader reads a document on the compliant iPad.
    r = admin.post("/api/v1/leaders", json={"full_name": "Nguyễn Văn An", "title": "Giám đốc", "unit": "TTTH",
                                            "role": "director"})
    assert r.status_code == 201, r.text
    assert admin.put(f"/api/v1/devices/{sim.udid}/assignment", json={"leader_id": r.json()["id"]}).status_code == 200
    r = upload(officer, "bao-cao.txt", "Báo cáo tháng 11.\n".encode() * 20, title="Báo cáo")
    assert r.status_code == 201, r.text
    doc = r.json()
    ipad = ipad_client(server, tmp_path, sim)
    assert ipad.get(f"/docs/{doc['id']}").status_code == 200

    # The passcode is removed: one incremental status report, and the very next request is refused.
    before = report_count(server)
    r = sim.remove_passcode()
    assert r.status_code == 200
    assert report_count(server) == before + 1
    assert verdict_state(server, sim) == "non_compliant"
    assert ipad.get(f"/docs/{doc['id']}").status_code == 403
    # ... and its VPN peer is cut in the same transaction, gone from the gateway config after commit.
    assert peer_row(server, sim.udid).state == "cut"
    server.wait_pushes()
    assert peer_row(server, sim.udid).public_key not in config_peers(server)
    with server.session() as s:
        last = s.scalars(select(StatusReportRecord).order_by(StatusReportRecord.id.desc())).first()
        assert last.full_report is False and set(last.changed) >= {"passcode.is-present", "passcode.is-compliant"}
    sim.set_passcode()
    assert verdict_state(server, sim) == "compliant"
    assert ipad.get(f"/docs/{doc['id']}").status_code == 200
    assert peer_row(server, sim.udid).state == "active"

    # A new version of one declaration: the server tells the iPad, which fetches only that one.
    r = admin.put("/api/v1/declarations/vpcp.passcode", json={"payload": {"RequirePasscode": True, "MinimumLength": 8}})
    assert r.status_code == 200 and r.json()["devices_synced"] == 1, r.text
    server.wait_pushes()
    fetched = len(sim.ddm.requests)
    handled = sim.process_commands()
    assert [c["Command"]["RequestType"] for c in handled] == ["DeclarativeManagement"]
    assert json.loads(handled[0]["Command"]["Data"])["SyncTokens"]["DeclarationsToken"] == sim.ddm.token
    got = sim.ddm.requests[fetched:]
    assert got[:2] == ["tokens", "declaration-items"] and "declaration/configuration/vpcp.passcode" in got
    assert not any("ipados" in e for e in got)
    # Six digits no longer meet the policy: the iPad says so, and the verdict follows.
    assert verdict_state(server, sim) == "non_compliant"
    sim.set_passcode(length=8)
    assert verdict_state(server, sim) == "compliant"
    ipad.close()
    sim.close()


def test_overdue_update_and_failed_declaration_make_the_ipad_non_compliant(ddm_server):
    server = ddm_server
    admin, officer = api(server, "it_admin"), api(server, "security_officer")
    policy(officer, [{"kind": "os_update_deadline"}, {"kind": "declarations_active"}])
    overdue = dict(UPDATE, payload=dict(UPDATE["payload"], TargetLocalDateTime="2025-01-31T17:00:00"))
    create(admin, overdue, assign={"all": True})
    sim = enroll(server)
    assert verdict_state(server, sim) == "non_compliant"
    r = admin.get(f"/api/v1/devices/{sim.udid}")
    reasons = " ".join(r.json()["verdict"]["reasons_vi"])
    assert "Chưa cập nhật iPadOS 18.2" in reasons and "31/01/2025" in reasons
    sim.install_os_update()
    assert verdict_state(server, sim) == "compliant"
    assert device_row(server, sim.udid).os_version == "18.2"

    create(admin, PASSCODE, assign={"devices": [sim.udid]})
    server.wait_pushes()
    sim.process_commands()
    sim.fail_declaration("vpcp.passcode")
    assert verdict_state(server, sim) == "non_compliant"
    body = admin.get(f"/api/v1/devices/{sim.udid}/declarations").json()
    assert body["errors"][0]["identifier"] == "vpcp.passcode"
    assert body["errors"][0]["reasons"][0]["code"] == "Error.ConfigurationCannotBeApplied"
    sim.close()


def test_older_ipad_keeps_the_mdm_command_path(ddm_server):
    server = ddm_server
    admin = api(server, "it_admin")
    create(admin, PASSCODE, assign={"all": True})
    sim = server.simulator()
    sim.state.os_version, sim.state.build_version = "16.7.10", "20H350"
    sim.ddm.supported = False
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    handled = sim.process_commands()
    assert "DeclarativeManagement" not in [c["Command"]["RequestType"] for c in handled]
    assert not sim.ddm.enabled and sim.ddm.requests == []
    body = admin.get(f"/api/v1/devices/{sim.udid}/declarations").json()
    assert body["uses_ddm"] is False and "set" not in body
    assert admin.post(f"/api/v1/devices/{sim.udid}/declarations/sync").status_code == 409
    sim.close()


def test_unsupported_declaration_types_are_withheld(ddm_server):
    server = ddm_server
    admin = api(server, "it_admin")
    create(admin, PASSCODE, assign={"all": True})
    sim = server.simulator()
    sim.ddm.unsupported_types = {"com.apple.configuration.passcode.settings"}
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    # The first sync happens before the server knows the capabilities; the status report tells it.
    admin.post(f"/api/v1/devices/{sim.udid}/declarations/sync")
    server.wait_pushes()
    sim.process_commands()
    assert "vpcp.passcode" not in sim.ddm.declarations
    body = admin.get(f"/api/v1/devices/{sim.udid}/declarations").json()
    assert "vpcp.passcode" in body["withheld"]
    sim.close()


def test_monthly_report_shows_update_enforcement_and_declaration_health(ddm_server, tmp_path):
    import datetime as dt
    from zoneinfo import ZoneInfo

    from tests.test_mdm_api_cli import _cli

    server = ddm_server
    admin = api(server, "it_admin")
    local = dt.datetime.now(ZoneInfo("Asia/Ho_Chi_Minh"))
    due = (local - dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    create(admin, dict(UPDATE, payload=dict(UPDATE["payload"], TargetLocalDateTime=due)), assign={"all": True})
    create(admin, PASSCODE, assign={"all": True})
    behind, updated = enroll(server), enroll(server)
    updated.install_os_update()
    behind.ddm.update_failure = "Not enough storage"
    behind.fail_declaration("vpcp.passcode")
    month = local.strftime("%Y-%m")
    out = tmp_path / "report"
    _cli(server, "report", "monthly", "--month", month, "--format", "html,xlsx", "--output", str(out), "--quiet")
    html = next(out.glob("*.html")).read_text(encoding="utf-8")
    section = html[html.index("Cập nhật iPadOS bắt buộc và tình trạng khai báo cấu hình"):]
    assert "Cập nhật iPadOS 18.2 hạn" in section
    assert "2 thiết bị áp dụng; đạt đúng hạn 0; đạt cuối kỳ 1; quá hạn 1; cài đặt lỗi 1." in section
    assert "Thiết bị không áp dụng được cấu hình" in section and "vpcp.passcode" in section
    assert "Error.Configuration" not in html and "Not enough storage" not in html
    import openpyxl

    book = openpyxl.load_workbook(next(out.glob("*.xlsx")), read_only=True)
    rows = list(book["Lỗi cập nhật iPadOS"].values)
    assert rows[1][0] == behind.udid and "Not enough storage" in rows[1][-1]
    behind.close()
    updated.close()


def test_large_reach_is_synced_by_the_background_task(ddm_server, monkeypatch):
    from declarative import sync

    server = ddm_server
    admin = api(server, "it_admin")
    create(admin, PASSCODE, assign={"all": True})
    sims = [enroll(server), enroll(server)]
    monkeypatch.setattr(sync, "INLINE_LIMIT", 1)  # two iPads are "many" here
    r = admin.put("/api/v1/declarations/vpcp.passcode", json={"payload": {"MinimumLength": 4}})
    assert r.status_code == 200 and r.json()["sync"] == "queued" and r.json()["devices"] == 2, r.text
    server.wait_pushes()
    for sim in sims:
        assert [c["Command"]["RequestType"] for c in sim.process_commands()] == ["DeclarativeManagement"]
        assert sim.ddm.declarations["vpcp.passcode"]["Payload"]["MinimumLength"] == 4
        sim.close()
