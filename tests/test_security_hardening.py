"""The attack run's other findings, each reproduced over real HTTPS and now refused:
unit-scoped tokens, secrets left in answered commands, out-of-range paging, oversized
device strings, revealing lockouts, file modes, secure-by-default compliance."""
from __future__ import annotations

import json
import logging
import re
import stat

import pytest
from sqlalchemy import select, text

from ipad_mdm.models import Unit
from mdm.models import Command, Device
from tests.conftest import retire_baseline_policy
from tests.test_console_support import PASSWORD, ConsoleClient, client_for, seed

UDID_RE = re.compile(r"<udid>")


def api(server, role="it_admin", unit=None):
    from ipad_mdm.auth import create_api_token

    with server.session() as s:
        unit_id = s.scalar(select(Unit.id).where(Unit.code == unit)) if unit else None
        token = create_api_token(s, f"t-{role}-{unit}", role, unit_id)
    return server.http(headers={"Authorization": f"Bearer {token}"})


def make_unit(server, code):
    with server.session() as s:
        s.add(Unit(code=code, name_vi=f"Đơn vị {code}", name_en=code))


def enroll(server, unit=None):
    sim = server.simulator()
    sim.enroll(server.enrollment_url(unit_code=unit))
    server.wait_pushes()
    sim.process_commands()
    return sim


# ------------------------------------------------------------------ unit-scoped API tokens
def _routes(app):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule.rule


def _concrete(path, udid):
    path = path.replace("<udid>", udid)
    path = re.sub(r"<int:\w+>", "1", path)
    return re.sub(r"<\w+>", "x", path)


def test_unit_scoped_tokens_role_by_unit_matrix(server):
    """Every /api/v1 route, every role, office-wide and unit-scoped tokens: a unit's token never
    reads or acts on another unit's device, and never reaches an office-wide resource."""
    make_unit(server, "TCCB")
    make_unit(server, "HC")
    own, other = enroll(server, "TCCB"), enroll(server, "HC")
    routes = list(_routes(server.app))
    assert len(routes) > 30
    device_routes = [(m, p) for m, p in routes if "<udid>" in p]
    # Routes that look their device up through mdm.scope or filter by the token's unit.
    unit_aware = {("GET", "/api/v1/devices"), ("GET", "/api/v1/vpn/peers"), ("POST", "/api/v1/enrollment-tokens"),
                  ("GET", "/api/v1/enrollment-tokens"), ("POST", "/api/v1/enrollment-tokens/<int:token_id>/revoke"),
                  ("POST", "/api/v1/api-tokens"), ("GET", "/api/v1/commands/<command_uuid>"),
                  ("POST", "/api/v1/identities/<serial>/revoke")}
    from concurrent.futures import ThreadPoolExecutor

    def sweep(role, client, udid, check_foreign):
        for method, path in routes:
            r = client.request(method, _concrete(path, udid), json={})
            assert r.status_code < 500, (role, method, path, r.text)
            if check_foreign:
                # Nothing of the other unit's device comes back (a 404 may echo the UDID asked for).
                assert other.serial not in r.text, (role, method, path)
                if (method, path) in device_routes:
                    assert r.status_code in (400, 403, 404), (role, method, path, r.status_code)
                elif (method, path) not in unit_aware:
                    assert r.status_code in (401, 403), (role, method, path, r.status_code)

    for role in ("it_admin", "security_officer", "auditor", "leader"):
        scoped, wide, scoped_own = api(server, role, "TCCB"), api(server, role), api(server, role, "TCCB")
        # The three sweeps are independent: run side by side (the server is threaded, like gunicorn's).
        with ThreadPoolExecutor(3) as pool:
            for done in [pool.submit(sweep, role, scoped, other.udid, True), pool.submit(sweep, role, wide, other.udid, False),
                         pool.submit(sweep, role, scoped_own, own.udid, False)]:
                done.result()
        scoped_own.close()
        listing = scoped.get("/api/v1/devices")
        if role != "leader":
            assert [d["udid"] for d in listing.json()["devices"]] == [own.udid]
        scoped.close()
        wide.close()

    # The unit's own device is fully reachable with the unit's token.
    admin = api(server, "it_admin", "TCCB")
    assert admin.get(f"/api/v1/devices/{own.udid}").status_code == 200
    assert admin.get(f"/api/v1/devices/{own.udid}/commands").status_code == 200
    r = admin.post(f"/api/v1/devices/{own.udid}/commands", json={"request_type": "DeviceInformation"})
    assert r.status_code == 201
    assert admin.get(f"/api/v1/commands/{r.json()['command_uuid']}").status_code == 200
    assert admin.get(f"/api/v1/devices/{own.udid}/verdict").status_code == 200
    assert admin.get(f"/api/v1/devices/{own.udid}/vpn").status_code == 200
    with server.session() as s:
        foreign = s.scalar(select(Command.uuid).where(Command.device_id == s.scalar(
            select(Device.id).where(Device.udid == other.udid))))
    assert admin.get(f"/api/v1/commands/{foreign}").status_code == 404
    # Enrollment into its own unit only; tokens it mints stay in its unit and role.
    assert admin.post("/api/v1/enrollment-tokens", json={"unit": "HC"}).status_code == 403
    assert admin.post("/api/v1/enrollment-tokens", json={}).json()["unit"] == "TCCB"
    # Listing and revoking enrollment tokens stay inside the unit too.
    foreign_token = api(server, "it_admin").post("/api/v1/enrollment-tokens", json={"unit": "HC"}).json()
    listed = admin.get("/api/v1/enrollment-tokens").json()["enrollment_tokens"]
    assert listed and {t["unit"] for t in listed} == {"TCCB"}
    assert foreign_token["id"] not in {t["id"] for t in listed}
    assert admin.post(f"/api/v1/enrollment-tokens/{foreign_token['id']}/revoke").status_code == 404
    assert admin.post("/api/v1/api-tokens", json={"name": "x", "unit": "HC"}).status_code == 403
    assert admin.post("/api/v1/api-tokens", json={"name": "x", "role": "security_officer"}).status_code == 403
    minted = admin.post("/api/v1/api-tokens", json={"name": "tccb-reader"})
    assert minted.status_code == 201 and minted.json()["unit"] == "TCCB" and minted.json()["role"] == "it_admin"
    child = server.http(headers={"Authorization": f"Bearer {minted.json()['token']}"})
    assert child.get(f"/api/v1/devices/{other.udid}").status_code == 404
    assert child.get(f"/api/v1/devices/{own.udid}").status_code == 200
    admin.close()
    child.close()


def test_unit_scoped_token_from_the_cli(server):
    from tests.test_mdm_api_cli import _cli

    make_unit(server, "TTTH")
    out = json.loads(_cli(server, "api-token", "create", "--name", "ttth", "--role", "auditor", "--unit", "TTTH",
                          "--json").stdout)
    assert out["unit"] == "TTTH" and out["token"].startswith("imdm_")
    refused = _cli(server, "api-token", "create", "--name", "x", "--role", "auditor", "--unit", "NOPE", check=False)
    assert refused.returncode == 1 and "unknown unit" in refused.stderr


# ------------------------------------------------------------------ secrets forgotten once answered
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_command_secrets_are_forgotten_once_answered(server, enrolled):
    from mdm import commands as command_queue
    from mdm.protocol import SECRET_KEYS

    assert set(SECRET_KEYS) >= {"DeviceLock", "EraseDevice", "ClearPasscode", "InstallProfile"}
    sim = enrolled
    wg_private = re.search(r"PrivateKey\s*=\s*(\S+)", next(
        p["PayloadContent"][0]["VendorConfig"]["WgQuickConfig"] for p in sim.state.installed_profiles.values()
        if p["PayloadContent"][0]["PayloadType"] == "com.apple.vpn.managed")).group(1)
    officer = server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"})
    r = officer.post(f"/api/v1/devices/{sim.udid}/commands",
                     json={"request_type": "DeviceLock", "params": {"PIN": "749302", "Message": "Khoá"}})
    assert r.status_code == 201 and "749302" not in r.text
    r = officer.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "EraseDevice",
                                                                   "params": {"PIN": "538201"}})
    assert r.status_code == 201 and "538201" not in r.text
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        command_queue.enqueue(s, device, "ClearPasscode", {"UnlockToken": sim.unlock_token}, requested_by="test")
    server.wait_pushes()
    sim.process_commands()

    def everything(s) -> str:
        dump = []
        for table in ("commands", "command_events", "devices"):
            dump += [str(row) for row in s.execute(text(f"SELECT * FROM {table}"))]
        return "\n".join(dump)

    with server.session() as s:
        statuses = {c.request_type: c.status for c in s.scalars(select(Command))}
        assert statuses["DeviceLock"] == statuses["EraseDevice"] == statuses["ClearPasscode"] == "acknowledged"
        dump = everything(s)
    for secret in ("749302", "538201", wg_private, sim.unlock_token.hex()):
        assert secret not in dump
    assert repr(sim.unlock_token)[2:-1] not in dump
    if server.instance.database.engine.dialect.name == "sqlite":
        with server.instance.database.engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db_file = server.instance.settings.database_url.removeprefix("sqlite:///")
        raw = open(db_file, "rb").read()
        for secret in (b"749302", b"538201", wg_private.encode(), sim.unlock_token):
            assert secret not in raw
    detail = officer.get(f"/api/v1/devices/{sim.udid}/commands").json()
    lock = next(c for c in detail["commands"] if c["request_type"] == "DeviceLock")
    assert lock["command"]["PIN"] == "" and lock["command"]["PINForgotten"] is True
    officer.close()


# ------------------------------------------------------------------ paging and ids
def test_out_of_range_paging_is_400_everywhere(server, enrolled, caplog):
    seed(server)
    admin = api(server, "it_admin")
    auditor = api(server, "auditor")
    officer = api(server, "security_officer")
    huge = "99999999999999999999"
    for client, path, params in (
        (admin, "/api/v1/devices", {"offset": huge}), (admin, "/api/v1/devices", {"limit": huge}),
        (admin, "/api/v1/devices", {"offset": "-1"}), (admin, "/api/v1/devices", {"limit": "0"}),
        (admin, "/api/v1/devices", {"limit": "abc"}), (admin, "/api/v1/vpn/peers", {"offset": huge}),
        (auditor, "/api/v1/audit/gateway", {"offset": huge}), (auditor, "/api/v1/audit/gateway", {"after_id": huge}),
        (auditor, "/api/v1/audit/gateway", {"leader": huge}), (officer, "/api/v1/documents", {"limit": huge}),
        (officer, "/api/v1/security-events", {"offset": huge}),
        (admin, f"/api/v1/devices/{enrolled.udid}/verdict-history", {"limit": huge}),
    ):
        r = client.get(path, params=params)
        assert r.status_code == 400, (path, params, r.status_code, r.text)
        assert "between" in r.json()["error"]
    for client, path in ((officer, f"/api/v1/policies/{huge}"), (auditor, f"/api/v1/reports/{huge}"),
                         (admin, f"/api/v1/leaders/{huge}")):
        r = client.request("PATCH" if "leaders" in path else "GET", path, json={})
        assert r.status_code == 404, (path, r.status_code)
    console = client_for(server, "admin")
    for path in ("/console/devices", "/console/handover", "/console/documents"):
        r = console.get(path, params={"page": huge})
        assert r.status_code == 400 and "Số trang" in r.text, (path, r.status_code)
    assert console.get("/console/handover", params={"unit": huge}).status_code == 400
    assert console.get("/console/devices", params={"unit": huge}).status_code == 200
    assert console.get(f"/console/handover/{huge}").status_code == 404
    assert "Traceback" not in caplog.text
    for c in (admin, auditor, officer, console):
        c.close()


# ------------------------------------------------------------------ device-sent strings
def test_device_strings_are_limited(server, caplog):
    sim = server.simulator()
    with server.http() as http:
        sim.install_enrollment_profile(http.get(server.enrollment_url()).content)
    sim.scep_enroll()
    sim.state.device_name = "A" * 200_000
    caplog.set_level(logging.WARNING)
    r = sim.authenticate()
    assert r.status_code == 200
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.device_name == "A" * 255
    assert "DeviceName of 200000 characters" in caplog.text
    # Refused outright: an identifying key too long to store without changing it.
    r = sim.checkin({"MessageType": "TokenUpdate", "Topic": sim.mdm_payload["Topic"], "UDID": sim.udid,
                     "Token": b"\x01" * 32, "PushMagic": "M" * 5000})
    assert r.status_code == 400 and "PushMagic longer than 200" in r.json()["error"]
    assert sim.token_update().status_code == 200
    server.wait_pushes()
    # Inventory answers: columns truncated, long strings in the stored JSON cut to 4096 characters.
    sim.state.device_name = "B" * 100_000
    sim.state.os_version = "18.1" + "9" * 100
    sim.process_commands()
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.device_name == "B" * 255 and len(device.os_version) == 32
        assert device.device_information["DeviceName"] == "B" * 4096
    assert "truncated before storing" in caplog.text
    sim.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_device_strings_are_limited_on_postgres(server):
    """PostgreSQL enforces VARCHAR lengths: an untruncated value would have been a 503, not a 200."""
    sim = server.simulator()
    with server.http() as http:
        sim.install_enrollment_profile(http.get(server.enrollment_url()).content)
    sim.scep_enroll()
    sim.state.device_name, sim.state.model_name = "Đ" * 1000, "M" * 1000
    assert sim.authenticate().status_code == 200
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.device_name == "Đ" * 255 and device.model_name == "M" * 128


# ------------------------------------------------------------------ lockout reveals nothing
def _comparable(resp) -> tuple:
    body = re.sub(r'name="csrf_token" value="[^"]+"', "", resp.text)
    headers = {k: v for k, v in resp.headers.items() if k not in ("set-cookie", "date", "content-length")}
    return resp.status_code, body, headers


def test_lockout_is_the_same_for_real_and_unknown_accounts(server):
    seed(server)
    answers = {}
    for name in ("auditor", "khong-ton-tai"):
        c = ConsoleClient(server)
        seen = [_comparable(c.login(name, "sai-mat-khau-hoan-toan")) for _ in range(7)]
        seen.append(_comparable(c.login(name, PASSWORD)))  # even the right password is refused while locked
        answers[name] = seen
        c.close()
    real, unknown = answers["auditor"], answers["khong-ton-tai"]
    assert [a[0] for a in real] == [401, 401, 401, 401, 429, 429, 429, 429]
    assert real == unknown


# ------------------------------------------------------------------ secure by default
def test_fresh_install_ships_a_baseline_policy(server, tmp_path):
    from tests.test_gateway import ipad_client, refresh

    officer = api(server, "security_officer")
    admin = api(server, "it_admin")
    [baseline] = officer.get("/api/v1/policies").json()["policies"]
    assert baseline["assign"] == {"all": True, "units": []} and baseline["created_by"] == "system"
    assert {r["kind"] for r in baseline["rules"]} == {
        "passcode_present", "passcode_compliant", "min_os_version", "identity_certificate_valid",
        "last_checkin_within_hours", "mdm_profile_present", "not_in_lost_mode"}
    assert next(r for r in baseline["rules"] if r["kind"] == "last_checkin_within_hours")["hours"] == 24
    assert {a["type"] for a in baseline["actions"]} >= {"block_gateway"}

    make_unit(server, "TTTH")
    sim = server.simulator()
    sim.state.passcode_present = False
    sim.state.os_version = "16.7"
    sim.enroll(server.enrollment_url(unit_code="TTTH"))
    server.wait_pushes()
    sim.process_commands()
    leader = admin.post("/api/v1/leaders", json={"full_name": "Nguyễn Văn An", "unit": "TTTH", "role": "director"})
    assert admin.put(f"/api/v1/devices/{sim.udid}/assignment", json={"leader_id": leader.json()["id"]}).status_code == 200
    verdict = admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()
    assert verdict["state"] == "non_compliant" and verdict["document_access"] is False
    assert {r["rule"] for r in verdict["failing_rules"]} == {"passcode_present", "min_os_version"}
    ipad = ipad_client(server, tmp_path, sim)
    r = ipad.get("/docs/", headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "verdict_non_compliant"

    # Fixed: compliant, documents open.
    sim.state.passcode_present, sim.state.os_version = True, "18.1"
    refresh(admin, sim)
    admin.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "DeviceInformation"})
    sim.process_commands()
    assert admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()["state"] == "compliant"
    assert ipad.get("/docs/").status_code == 200

    # No policy applies any more: unknown, and the gateway says why.
    retire_baseline_policy(officer)
    refresh(admin, sim)
    verdict = admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()
    assert verdict["state"] == "unknown" and verdict["reasons_en"] == ["No security policy applies to this device"]
    r = ipad.get("/docs/", headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "verdict_unassessed"
    assert "chính sách" in ipad.get("/docs/").text
    for c in (officer, admin, ipad):
        c.close()


# ------------------------------------------------------------------ file modes
def test_everything_under_the_instance_is_private(server, enrolled, tmp_path):
    """Reports, documents, VPN config, CA, secrets: 0700 folders and 0600 files, also after the
    folders existed with looser modes (an instance made by an older version)."""
    from reports import service as reports_service

    inst = server.instance.settings.instance_dir
    (inst / "reports").mkdir(exist_ok=True)
    (inst / "reports").chmod(0o755)
    officer = api(server, "security_officer")
    make_unit(server, "TTTH")
    r = officer.post("/api/v1/documents", data={"title": "t", "unit": "TTTH", "classification": "internal"},
                     files={"file": ("a.txt", b"noi dung tai lieu")})
    assert r.status_code == 201, r.text
    with server.session() as s:
        report, _ = reports_service.request_report(s, "monthly", "2026-11", "vi", ["csv"], created_by="test")
        report_id = report.id
    reports_service.run_report(server.instance, report_id)
    from ipad_mdm.instance import open_instance

    open_instance(server.instance.settings)  # a restart tightens what was left loose
    for path in [inst, *inst.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert list((inst / "reports").rglob("*.zip"))
    officer.close()
