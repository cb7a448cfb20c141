"""How an operator works with declarations: the CLI, the console (vi and en), and what a
security officer or a unit-scoped token may not do."""
from __future__ import annotations

import json

import pytest

from tests.test_console_support import client_for, seed
from tests.test_ddm import PASSCODE, UPDATE
from tests.test_gateway import api, enroll
from tests.test_mdm_api_cli import _cli

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def test_cli_creates_assigns_and_shows_device_states(server, tmp_path):
    seed(server)
    spec = tmp_path / "passcode.json"
    spec.write_text(json.dumps(PASSCODE, ensure_ascii=False), encoding="utf-8")
    created = json.loads(_cli(server, "declaration", "create", str(spec)).stdout)
    assert created["identifier"] == "vpcp.passcode" and created["version"] == 1
    out = json.loads(_cli(server, "declaration", "assign", "vpcp.passcode", "--unit", "TTTH").stdout)
    assert out["assignments"][0]["target"] == "unit"
    bad = _cli(server, "declaration", "create", json.dumps({**UPDATE, "payload": {"TargetOSVersion": "x"}}), check=False)
    assert bad.returncode == 2 and "TargetOSVersion" in bad.stderr
    sim = enroll(server)  # no unit: only the server's own declarations
    assert "vpcp.passcode" not in sim.ddm.declarations
    assert _cli(server, "declaration", "assign", "vpcp.passcode", "--device", sim.udid).returncode == 0
    server.wait_pushes()
    sim.process_commands()
    assert "vpcp.passcode" in sim.ddm.declarations
    sim.fail_declaration("vpcp.passcode")
    shown = json.loads(_cli(server, "declaration", "device", sim.udid).stdout)
    assert shown["enabled"] is True
    assert shown["errors"][0]["reasons_vi"] == ["Thiết bị không áp dụng được cấu hình"]
    synced = json.loads(_cli(server, "declaration", "sync", sim.udid).stdout)
    assert synced["devices_synced"] == 1
    listed = json.loads(_cli(server, "declaration", "list", "--json").stdout)
    assert [d["identifier"] for d in listed] == ["vpcp.passcode"]
    assert _cli(server, "declaration", "delete", "vpcp.passcode").returncode == 0
    sim.close()


@BOTH
def test_console_declarations_pages_and_device_card(server):
    seed(server)
    admin, sec = client_for(server, "admin"), client_for(server, "security")
    resp = admin.post("/console/declarations/new", {"body": json.dumps({**PASSCODE, "payload": {"MinimumLength": 99}})})
    assert resp.status_code == 400
    assert "MinimumLength" in resp.text and "Vui lòng kiểm tra lại" in resp.text
    resp = admin.post("/console/declarations/new", {"body": json.dumps(PASSCODE, ensure_ascii=False)})
    assert resp.status_code == 302, resp.text
    url = resp.headers["location"]
    resp = admin.post(url, {"action": "assign", "target_kind": "all", "target": ""})
    assert resp.status_code == 302
    sim = enroll(server)
    sim.fail_declaration("vpcp.passcode")
    page = admin.get(url).text
    assert "Không hợp lệ" in page and "Thiết bị không áp dụng được cấu hình" in page
    assert "Error.ConfigurationCannotBeApplied" not in page
    listing = admin.get("/console/declarations").text
    assert "Mật mã mở khoá" in listing and 'id="declaration-new"' in listing
    device = admin.get(f"/console/devices/{sim.udid}").text
    assert 'id="ddm-card"' in device and "vpcp.passcode" in device and "Không hợp lệ" in device
    admin.post("/console/lang", {"lang": "en"})
    device_en = admin.get(f"/console/devices/{sim.udid}").text
    assert "Declarative management" in device_en and "The configuration cannot be applied" in device_en
    # A new version from the console: the iPad is told to sync and fetches it.
    resp = admin.post(url, {"action": "version", "body": json.dumps({"RequirePasscode": True, "MinimumLength": 4})})
    assert resp.status_code == 302
    server.wait_pushes()
    sim.ddm.fail.clear()
    sim.process_commands()
    assert sim.ddm.declarations["vpcp.passcode"]["Payload"]["MinimumLength"] == 4
    # Security officers read, they do not change declarations.
    assert sec.get(url).status_code == 200
    assert sec.post(url, {"action": "assign", "target_kind": "all", "target": ""}).status_code == 403
    assert sec.get("/console/declarations/new").status_code == 403
    sim.close()
    admin.close()
    sec.close()


def test_unit_scoped_tokens_and_officers_cannot_change_declarations(server):
    units = seed(server)["units"]
    from ipad_mdm.auth import create_api_token

    with server.session() as s:
        scoped = create_api_token(s, "unit", "it_admin", unit_id=units["TTTH"])
    h = server.http(headers={"Authorization": f"Bearer {scoped}"})
    r = h.post("/api/v1/declarations", json=PASSCODE)
    assert r.status_code == 403 and "office-wide" in r.json()["error"]
    assert h.get("/api/v1/declarations").status_code == 403  # office-wide data
    ours = server.simulator()
    ours.enroll(server.enrollment_url(unit_code="TTTH"))
    server.wait_pushes()
    ours.process_commands()
    theirs = enroll(server)
    assert h.get(f"/api/v1/devices/{ours.udid}/declarations").json()["uses_ddm"] is True
    assert h.get(f"/api/v1/devices/{ours.udid}/status-reports").json()["total"] >= 1
    assert h.get(f"/api/v1/devices/{theirs.udid}/declarations").status_code == 404
    assert h.get(f"/api/v1/devices/{theirs.udid}/status-reports").status_code == 404
    assert h.post(f"/api/v1/devices/{theirs.udid}/declarations/sync").status_code == 404
    assert h.get(f"/api/v1/devices/{ours.udid}/status-reports?offset=99").status_code == 400
    ours.close()
    theirs.close()
    officer = api(server, "security_officer")
    assert officer.post("/api/v1/declarations", json=PASSCODE).status_code == 403
    h.close()
    officer.close()
