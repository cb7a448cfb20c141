"""The admin API and the `ipad-mdm` CLI against a live server; APNs outage; mTLS via proxy header."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from mdm.models import Command, Device

IPAD_MDM = str(Path(sys.executable).with_name("ipad-mdm"))


def _cli(server, *args, check=True):
    env = dict(os.environ)
    env.update({
        "IPAD_MDM_INSTANCE": str(server.instance.settings.instance_dir),
        "DATABASE_URL": server.instance.settings.database_url,
        "IPAD_MDM_BASE_URL": server.url,
        "IPAD_MDM_APNS_URL": server.apns.url,
        "IPAD_MDM_APNS_CA": server.instance.settings.apns_ca_file or "",
    })
    proc = subprocess.run([IPAD_MDM, *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_api_requires_a_valid_token_and_role(enrolled, server):
    http = server.http()
    assert http.get("/api/v1/devices").status_code == 401
    assert http.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}).status_code == 401
    auditor = server.api_token("auditor")
    h = {"Authorization": f"Bearer {auditor}"}
    r = http.get("/api/v1/devices", headers=h)
    assert r.status_code == 200 and r.json()["total"] == 1
    r = http.post(f"/api/v1/devices/{enrolled.udid}/commands", headers=h, json={"request_type": "DeviceLock"})
    assert r.status_code == 403 and "auditor" in r.json()["error"]
    r = http.post("/api/v1/enrollment-tokens", headers=h, json={})
    assert r.status_code == 403


def test_api_enrollment_device_and_command_flow(enrolled, server):
    admin = server.api_token("it_admin")
    http = server.http(headers={"Authorization": f"Bearer {admin}"})

    r = http.post("/api/v1/enrollment-tokens", json={"serial_number": "DMPQ0001"})
    assert r.status_code == 201
    body = r.json()
    assert body["url"].startswith(f"{server.url}/mdm/enroll?token=") and body["serial_number"] == "DMPQ0001"
    assert http.post("/api/v1/enrollment-tokens", json={"unit": "NOPE"}).status_code == 404
    assert http.post("/api/v1/enrollment-tokens", content=b"[1]", headers={"Content-Type": "application/json"}).status_code == 400

    detail = http.get(f"/api/v1/devices/{enrolled.udid}").json()
    assert detail["inventory"]["SecurityInfo"]["PasscodePresent"] is True
    assert detail["inventory"]["DeviceInformation"]["SerialNumber"] == enrolled.serial
    assert detail["certificates"][0]["revoked_at"] is None
    assert "unlock" not in json.dumps(detail).lower()  # UnlockToken never leaves the server
    assert http.get("/api/v1/devices/NOPE-0000-0000-0000-000000000000").status_code == 404

    pushes_before = len(server.apns.pushes)
    r = http.post(f"/api/v1/devices/{enrolled.udid}/commands",
                  json={"request_type": "EnableLostMode", "params": {"Message": "Thiết bị bị mất — liên hệ TTTH", "PhoneNumber": "024 0000 0000"}})
    assert r.status_code == 201, r.text
    uuid = r.json()["command_uuid"]
    server.wait_pushes()
    assert len(server.apns.pushes) == pushes_before + 1
    enrolled.process_commands()
    assert http.get(f"/api/v1/commands/{uuid}").json()["status"] == "acknowledged"
    assert http.get(f"/api/v1/devices/{enrolled.udid}").json()["lost_mode_enabled"] is True

    # Validation: unknown type, bad params, a PIN that is not six digits.
    assert http.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "Selfdestruct"}).status_code == 400
    r = http.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "DeviceLock", "params": {"PIN": "12"}})
    assert r.status_code == 400 and "PIN" in r.json()["error"]
    r = http.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "SecurityInfo", "params": {"Junk": 1}})
    assert r.status_code == 400 and "Junk" in r.json()["error"]
    history = http.get(f"/api/v1/devices/{enrolled.udid}/commands").json()["commands"]
    assert history[0]["command_uuid"] == uuid


def test_cli_contract(enrolled, server):
    token = json.loads(_cli(server, "enroll-token", "create", "--serial", "DMPZ9", "--json").stdout)
    assert set(token) >= {"token", "url"} and token["url"].startswith(f"{server.url}/mdm/enroll?token=")

    devices = json.loads(_cli(server, "device", "list", "--json").stdout)
    assert [d["udid"] for d in devices] == [enrolled.udid]
    shown = json.loads(_cli(server, "device", "show", enrolled.udid, "--json").stdout)
    assert shown["serial_number"] == enrolled.serial and shown["inventory"]["SecurityInfo"]["PasscodePresent"] is True
    assert "verdict" in shown

    pushes_before = len(server.apns.pushes)
    sent = json.loads(_cli(server, "command", "send", enrolled.udid, "DeviceInformation", "--json").stdout)
    uuid = sent["command_uuid"]
    assert len(server.apns.pushes) == pushes_before + 1  # the CLI woke the device
    status = json.loads(_cli(server, "command", "show", uuid, "--json").stdout)
    assert status["status"] == "queued"
    enrolled.process_commands()
    status = json.loads(_cli(server, "command", "show", uuid, "--json").stdout)
    assert status["status"] == "acknowledged" and status["result"]["QueryResponses"]["UDID"] == enrolled.udid

    bad = _cli(server, "command", "send", enrolled.udid, "NoSuchCommand", "--json", check=False)
    assert bad.returncode != 0 and "unsupported RequestType" in bad.stderr
    missing = _cli(server, "device", "show", "NOPE", "--json", check=False)
    assert missing.returncode != 0 and "unknown device" in missing.stderr


def test_apns_outage_loses_no_command(enrolled, server):
    admin = server.api_token("it_admin")
    http = server.http(headers={"Authorization": f"Bearer {admin}"})
    server.apns.fail_next(10, 503)
    r = http.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "SecurityInfo"})
    uuid = r.json()["command_uuid"]
    server.wait_pushes()
    with server.session() as s:
        d = s.scalar(select(Device).where(Device.udid == enrolled.udid))
        assert d.push_pending is True and d.push_failures == 1 and "503" in d.last_push_error
        assert s.scalar(select(Command).where(Command.uuid == uuid)).status == "queued"

    # APNs comes back; the periodic retry job sends the push once the backoff has passed.
    server.apns.clear_faults()
    import datetime as dt

    from mdm import push

    later = dt.datetime.now(dt.timezone.utc) + push.retry_delay(1) + dt.timedelta(seconds=1)
    due = push.due_for_retry(server.instance.database, now=later)
    assert due == [d.id]
    before = len(server.apns.pushes)
    server.dispatcher.request_push(due)
    server.wait_pushes()
    assert len(server.apns.pushes) == before + 1
    with server.session() as s:
        d = s.scalar(select(Device).where(Device.udid == enrolled.udid))
        assert d.push_pending is False and d.push_failures == 0
    enrolled.process_commands()
    assert http.get(f"/api/v1/commands/{uuid}").json()["status"] == "acknowledged"


def test_one_push_wave_records_each_answer(server):
    """A wave of pushes records what APNs said per device, in one transaction: accepted ones are no
    longer pending, a refused one counts a failure, a dead token is dropped, unless a TokenUpdate
    replaced it while the wave was under way."""
    from mdm.push import PushSender, apns_client

    sims = server.enroll_ipads(4)
    with server.session() as s:
        ids = [s.scalar(select(Device.id).where(Device.udid == sim.udid)) for sim in sims]
    dead, replaced, refused, fine = ids
    with server.session() as s:  # each has a command waiting (what makes a push pending)
        for i in ids:
            s.get(Device, i).push_pending = True
    real = apns_client(server.instance)

    class TokenUpdateDuringWave:
        def push(self, token, magic):
            with server.session() as s:
                device = s.get(Device, replaced)
                if token == device.push_token:  # the iPad sends a new token while its push is out
                    device.push_token = "ab" * 32
            return real.push(token, magic)

        def close(self):
            real.close()

    server.apns.fail_next(2, 410)  # pushes go out in device order: `dead`, then `replaced`
    sender = PushSender(server.instance.database, TokenUpdateDuringWave, instance=server.instance)
    try:
        assert sender.push([fine, dead, replaced]) == {dead: False, replaced: False, fine: True}
        server.apns.fail_next(5, 503)  # more than the client's attempts
        assert sender.push([refused]) == {refused: False}
    finally:
        sender.close()
    with server.session() as s:
        rows = {i: s.get(Device, i) for i in ids}
        assert rows[dead].push_token is None and not rows[dead].push_pending  # waits for a new TokenUpdate
        assert rows[dead].push_failures == 1 and "410" in rows[dead].last_push_error
        assert rows[replaced].push_token == "ab" * 32 and rows[replaced].push_failures == 1
        assert rows[replaced].push_pending  # the retry job pushes the new token
        assert rows[refused].push_pending and rows[refused].push_failures == 1
        assert "503" in rows[refused].last_push_error and rows[refused].push_token
        assert not rows[fine].push_pending and rows[fine].push_failures == 0 and rows[fine].last_push_error is None
        assert all(rows[i].last_push_at is not None for i in ids)
    for sim in sims:
        sim.close()


def test_client_certificate_from_trusted_proxy_header(tmp_path, database_url):
    from tests.conftest import start_live_server

    srv = start_live_server(tmp_path, database_url, client_cert_header="X-SSL-Client-Cert", proxy_secret="s3cret")
    try:
        sim = srv.simulator()
        sim.enroll(srv.enrollment_url())
        pem = quote(sim.identity.public_bytes(Encoding.PEM).decode())
        body_headers = {"X-SSL-Client-Cert": pem, "X-Proxy-Secret": "s3cret"}
        r = sim.put(sim.mdm_payload["ServerURL"], {"UDID": sim.udid, "Status": "Idle"}, sign=False, headers=body_headers)
        assert r.status_code == 200 and r.content  # the first inventory command
        r = sim.put(sim.mdm_payload["ServerURL"], {"UDID": sim.udid, "Status": "Idle"}, sign=False,
                    headers={"X-SSL-Client-Cert": pem, "X-Proxy-Secret": "wrong"})
        assert r.status_code == 401 and "untrusted proxy" in r.json()["error"]
        sim.close()
    finally:
        srv.stop()


def test_proxy_header_refused_without_configured_secret(tmp_path, database_url):
    from tests.conftest import start_live_server

    srv = start_live_server(tmp_path, database_url, client_cert_header="X-SSL-Client-Cert")
    try:
        sim = srv.simulator()
        sim.enroll(srv.enrollment_url())
        pem = quote(sim.identity.public_bytes(Encoding.PEM).decode())
        r = sim.put(sim.mdm_payload["ServerURL"], {"UDID": sim.udid, "Status": "Idle"}, sign=False,
                    headers={"X-SSL-Client-Cert": pem})
        assert r.status_code == 401 and "untrusted proxy" in r.json()["error"]
        sim.close()
    finally:
        srv.stop()
