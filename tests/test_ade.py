"""Automated Device Enrollment end to end: the server token from a stand-in of Apple's API, device
sync into the handover workflow, the enrollment profile at Apple, simulated iPads enrolling from
Setup Assistant with signed machine information and held until the office's setup is installed."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from ade.models import AdeDevice, AdeToken
from console.models import DeviceRecord
from ipad_mdm.security_events import SecurityEvent
from mdm.models import Command, Device, EnrollmentToken
from tests import apple_schema
from tests.conftest import start_live_server
from tests.dep_standin import DepStandin, make_server_token
from tests.sim_ade import AppleDeviceCA
from tests.test_gateway import api

SERIALS = ("F9FDN4ZKQ1GC", "DMPXK2ABCD01")


@pytest.fixture
def abm(tmp_path, database_url):
    standin = DepStandin()
    device_ca = AppleDeviceCA()
    ca_file = tmp_path / "apple-device-ca.pem"
    ca_file.write_bytes(device_ca.cert.public_bytes(serialization.Encoding.PEM))
    srv = start_live_server(tmp_path, database_url, extra={"ade_url": standin.url, "ade_ca": standin.ca_path,
                                                            "ade_device_ca": str(ca_file)})
    srv.standin, srv.device_ca = standin, device_ca
    srv.admin = api(srv, "it_admin")
    try:
        yield srv
    finally:
        srv.admin.close()
        srv.stop()
        standin.close()


def _upload(srv, server):
    pem = srv.admin.get("/api/v1/ade/public-key")
    assert pem.status_code == 200 and pem.headers["content-type"].startswith("application/x-pem-file")
    cert = x509.load_pem_x509_certificate(pem.content)
    token = make_server_token(cert, server)
    return srv.admin.post("/api/v1/ade/tokens", files={"token": ("MDM_Van_phong.p7m", token)})


def _enroll_url(srv) -> str:
    [profile] = srv.standin.profiles.values()
    return profile["url"]


def _commands(srv, udid):
    with srv.session() as s:
        device = s.scalar(select(Device).where(Device.udid == udid))
        return [(c.request_type, c.status) for c in s.scalars(select(Command).where(Command.device_id == device.id)
                                                              .order_by(Command.id))]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_ade_from_abm_to_a_configured_ipad(abm):
    srv, standin = abm, abm.standin
    server = standin.add_server()
    for serial in SERIALS:
        standin.assign_device(server, serial)
    r = _upload(srv, server)
    assert r.status_code == 201, r.text
    token = r.json()
    assert token["server_name"] == "MDM Văn phòng Chính phủ" and 360 <= token["days_left"] <= 365
    assert server.consumer_secret not in r.text and server.access_secret not in r.text
    with srv.session() as s:
        row = s.get(AdeToken, token["id"])
        assert server.access_secret not in row.credentials_enc  # sealed
    # Sync: ABM's iPads appear in the handover workflow as registered.
    r = srv.admin.post(f"/api/v1/ade/tokens/{token['id']}/sync")
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 2 and r.json()["full"] is True
    with srv.session() as s:
        records = {d.serial_number: d.state for d in s.scalars(select(DeviceRecord))}
    assert records == {s: "registered" for s in SERIALS}
    # The enrollment profile at Apple, assigned to the synced iPads.
    r = srv.admin.post(f"/api/v1/ade/tokens/{token['id']}/profile",
                       json={"department": "Trung tâm Tin học", "support_phone": "+84 24 3845 0000",
                             "support_email": "cntt@vpcp.gov.vn"})
    assert r.status_code == 201, r.text
    assert r.json()["assigned"] == {s: "SUCCESS" for s in SERIALS}
    [profile] = standin.profiles.values()
    assert profile["url"] == f"{srv.url}/mdm/ade/enroll" and profile["is_supervised"] is True
    assert profile["await_device_configured"] is True and profile["is_mandatory"] is True
    assert profile["language"] == "vi" and profile["department"] == "Trung tâm Tin học"
    assert all(server.devices[s]["profile_status"] == "assigned" for s in SERIALS)
    # A third iPad assigned in ABM later arrives by the incremental sync and gets the profile.
    standin.assign_device(server, "GG7QX1LMNP02")
    r = srv.admin.post(f"/api/v1/ade/tokens/{token['id']}/sync").json()
    assert r["added"] == 1 and r["full"] is False and r["assigned"] == {"GG7QX1LMNP02": "SUCCESS"}
    assert ("POST", "/devices/sync") in standin.requests

    # An iPad out of the box: signed machine info → profile → enrolled, held until set up.
    sim = srv.simulator(serial=SERIALS[0])
    sim.ade_enroll(_enroll_url(srv), srv.device_ca)
    srv.wait_pushes()
    with srv.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.awaiting_configuration is True and device.serial_number == SERIALS[0]
    handled = sim.process_commands()
    assert sim.state.awaiting_configuration is False
    [release] = [c for c in handled if c["Command"]["RequestType"] == "DeviceConfigured"]
    if apple_schema.schema_root() is not None:  # exactly what Apple's schema defines: no keys beyond RequestType
        schema = apple_schema.load("mdm/commands/device.configured.yaml")
        assert schema["payload"]["requesttype"] == "DeviceConfigured"
        assert apple_schema.problems({k: v for k, v in release["Command"].items() if k != "RequestType"},
                                     schema.get("payloadkeys") or []) == []
    sent = _commands(srv, sim.udid)
    assert ("DeviceConfigured", "acknowledged") in sent
    released_at = [t for t, _ in sent].index("DeviceConfigured")
    installs = [i for i, (t, _) in enumerate(sent) if t in ("InstallProfile", "InstallApplication", "Settings")]
    assert installs and max(installs) < released_at  # the unit's setup first, then release
    state = srv.admin.get(f"/api/v1/devices/{sim.udid}/ade").json()
    assert state["through_ade"] is True and state["awaiting_configuration"] is False and state["released"] is True
    with srv.session() as s:
        assert s.scalar(select(DeviceRecord.state).where(DeviceRecord.serial_number == SERIALS[0])) == "enrolled"

    # An install the iPad refuses keeps it in Setup Assistant; IT sees why and may release it.
    held = srv.simulator(serial=SERIALS[1])
    held.state.errors["InstallProfile"] = [{"ErrorCode": 4001, "ErrorDomain": "MCProfileErrorDomain",
                                            "LocalizedDescription": "Hồ sơ không hợp lệ"}]
    held.ade_enroll(_enroll_url(srv), srv.device_ca)
    srv.wait_pushes()
    held.process_commands()
    assert held.state.awaiting_configuration is True
    state = srv.admin.get(f"/api/v1/devices/{held.udid}/ade").json()
    assert state["refused"] == ["InstallProfile"] and state["released"] is False
    assert srv.admin.post(f"/api/v1/devices/{held.udid}/ade/release").status_code == 202
    srv.wait_pushes()
    held.process_commands()
    assert held.state.awaiting_configuration is False
    assert srv.admin.post(f"/api/v1/devices/{held.udid}/ade/release").status_code == 409
    listing = srv.admin.get("/api/v1/ade/tokens").json()["tokens"]
    assert listing[0]["devices"] == 3 and listing[0]["warning"] is False
    # Remove / assign the profile at Apple by serial; a serial ABM never gave is refused.
    r = srv.admin.request("DELETE", "/api/v1/ade/devices/profile", json={"devices": ["GG7QX1LMNP02"]})
    assert r.json() == {"devices": {"GG7QX1LMNP02": "SUCCESS"}} and server.devices["GG7QX1LMNP02"]["profile_status"] == "removed"
    r = srv.admin.put("/api/v1/ade/devices/profile", json={"devices": ["GG7QX1LMNP02"]})
    assert r.json() == {"devices": {"GG7QX1LMNP02": "SUCCESS"}} and server.devices["GG7QX1LMNP02"]["profile_status"] == "assigned"
    assert srv.admin.put("/api/v1/ade/devices/profile", json={"devices": ["NOPE00000000"]}).status_code == 404
    assert srv.admin.put("/api/v1/ade/devices/profile", json={"devices": "x"}).status_code == 400
    for s_ in (sim, held):
        s_.close()


def test_ade_refusals(abm):
    srv, standin = abm, abm.standin
    server = standin.add_server()
    standin.assign_device(server, SERIALS[0])
    # Server tokens: garbage, another server's key, expired → clear 400s, nothing stored.
    assert srv.admin.post("/api/v1/ade/tokens", content=b"not a token").json()["error"] == "token_unreadable"
    other_ca = AppleDeviceCA("another MDM server")
    foreign = make_server_token(other_ca.cert, server)
    r = srv.admin.post("/api/v1/ade/tokens", files={"token": ("x.p7m", foreign)})
    assert r.status_code == 400 and r.json()["error"] == "token_not_for_this_server"
    cert = x509.load_pem_x509_certificate(srv.admin.get("/api/v1/ade/public-key").content)
    old = standin.add_server(expiry=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    r = srv.admin.post("/api/v1/ade/tokens", files={"token": ("x.p7m", make_server_token(cert, old))})
    assert r.status_code == 400 and r.json()["error"] == "token_expired"
    auditor = api(srv, "auditor")
    assert auditor.post("/api/v1/ade/tokens", files={"token": ("x.p7m", foreign)}).status_code == 403
    with srv.session() as s:
        assert s.scalar(select(func.count()).select_from(AdeToken)) == 0

    # Apple's errors: a 503 is retried, an expired session renewed, a cursor of another server or an
    # expired one makes a full fetch, terms not accepted in ABM are said so.
    standin.fail_next = [429, 503]
    token = _upload(srv, server).json()
    standin.session_calls = 2
    r = srv.admin.post(f"/api/v1/ade/tokens/{token['id']}/sync")
    assert r.status_code == 200 and r.json()["added"] == 1
    other = standin.add_server()
    standin.assign_device(other, "OTHERSERIAL99")
    foreign_cursor = standin._fetch(other, {})[1]["cursor"]
    with srv.session() as s:
        s.get(AdeToken, token["id"]).cursor = foreign_cursor
    r = srv.admin.post(f"/api/v1/ade/tokens/{token['id']}/sync").json()
    assert r["full"] is True and r["added"] == 0
    with srv.session() as s:
        assert s.scalar(select(AdeDevice).where(AdeDevice.serial_number == "OTHERSERIAL99")) is None
        assert s.get(AdeToken, token["id"]).cursor != foreign_cursor
    standin.age_cursors(dt.timedelta(days=30))
    assert srv.admin.post(f"/api/v1/ade/tokens/{token['id']}/sync").json()["full"] is True
    standin.terms_pending = True
    r = srv.admin.post(f"/api/v1/ade/tokens/{token['id']}/sync")
    assert r.status_code == 502 and "T_C_NOT_SIGNED" in r.json()["detail"]
    standin.terms_pending = False

    # Machine information: tampered, unknown serial, not signed by Apple's device CA, junk.
    with srv.session() as s:
        tokens_before = s.scalar(select(func.count()).select_from(EnrollmentToken))
    url = f"{srv.url}/mdm/ade/enroll"
    sim = srv.simulator(serial=SERIALS[0])
    good = sim.machine_info(srv.device_ca)
    assert good.count(SERIALS[0].encode()) == 1
    tampered = good.replace(SERIALS[0].encode(), b"F9FDN4ZKQ1GX")
    http = srv.http()
    for body, status, code in (
        (tampered, 403, "machine_info_signature"),
        (srv.simulator(serial="UNKNOWN00001").machine_info(srv.device_ca), 403, "serial_unknown"),
        (srv.simulator(serial=SERIALS[0]).machine_info(AppleDeviceCA("not Apple")), 403, "machine_info_untrusted"),
        (b"\x30\x03\x02\x01\x01", 403, "machine_info_signature"),
        (b"", 400, "machine_info_malformed"),
        (b"\x30" * 70_000, 413, "machine_info_too_large"),
    ):
        r = http.post(url, content=body, headers={"Content-Type": "application/pkcs7-signature"})
        assert r.status_code == status and r.json()["error"] == code, (code, r.status_code, r.text[:200])
    with srv.session() as s:
        assert s.scalar(select(func.count()).select_from(EnrollmentToken)) == tokens_before
        assert s.scalar(select(func.count()).select_from(Device)) == 0
    # The genuine one is accepted.
    r = http.post(url, content=good, headers={"Content-Type": "application/pkcs7-signature"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-apple-aspen-config")
    http.close()
    auditor.close()


def test_server_token_expiry_is_warned_30_14_7_days_ahead(abm):
    from ade.jobs import token_expiry

    srv, standin = abm, abm.standin
    server = standin.add_server(expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=20, hours=1))
    token = _upload(srv, server).json()
    assert token["warning"] is True and token["days_left"] == 20
    assert token_expiry(srv.runtime)["warned"] == [{"token": token["id"], "days_left": 20}]
    assert token_expiry(srv.runtime)["warned"] == []  # once per threshold
    with srv.session() as s:
        s.get(AdeToken, token["id"]).access_token_expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=6)
    assert token_expiry(srv.runtime)["warned"] == [{"token": token["id"], "days_left": 5}]
    with srv.session() as s:
        events = s.scalars(select(SecurityEvent).where(SecurityEvent.kind == "ade_token_expiring")).all()
        assert len(events) == 2 and "Apple Business Manager" in events[0].summary_vi
        assert "/" in events[0].summary_vi and server.access_secret not in events[0].summary_vi


def test_readme_ade_block_runs_as_written(abm, tmp_path):
    """The README's ADE steps through the real CLI; between the first two the admin is in ABM
    (here: the stand-in makes the token for the certificate the first step wrote)."""
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    srv, standin = abm, abm.standin
    server = standin.add_server()
    standin.assign_device(server, SERIALS[0])
    root = Path(__file__).resolve().parent.parent
    block = re.search(r"<!-- cli-ade -->\n```sh\n(.*?)\n```", (root / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README lost its ADE block"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAD_MDM_") and k != "DATABASE_URL"}
    env.update(IPAD_MDM_INSTANCE=str(srv.instance.settings.instance_dir), DATABASE_URL=srv.instance.settings.database_url,
               IPAD_MDM_ADE_URL=standin.url, IPAD_MDM_ADE_CA=standin.ca_path)
    bin_dir = str(Path(sys.executable).parent) + "/"
    for line in [x for x in block.group(1).splitlines() if x.strip()]:
        proc = subprocess.run(["bash", "-c", line.replace(".venv/bin/", bin_dir)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (line, proc.stdout, proc.stderr)
        if "public-key" in line:
            cert = x509.load_pem_x509_certificate((tmp_path / "ipad-mdm-ade.pem").read_bytes())
            (tmp_path / "MDM_Van_phong_Token.p7m").write_bytes(make_server_token(cert, server))
        elif "token add" in line:
            assert json.loads(proc.stdout)["server_name"] == server.server_name
            assert server.access_secret not in proc.stdout
        elif "token list" in line:
            assert json.loads(proc.stdout)[0]["days_left"] >= 360
        elif "ade sync" in line:
            assert list(json.loads(proc.stdout).values())[0]["added"] == 1
        elif "ade profile" in line:
            assert list(json.loads(proc.stdout).values())[0]["assigned"] == {SERIALS[0]: "SUCCESS"}
    with srv.session() as s:
        assert s.scalar(select(DeviceRecord.state).where(DeviceRecord.serial_number == SERIALS[0])) == "registered"


def test_console_ade_page(abm):
    """IT staff upload the token and sync in the console; the expiry warning and refusals are in words."""
    from console.accounts import create_user
    from tests.test_console_support import PASSWORD, client_for

    srv, standin = abm, abm.standin
    with srv.session() as s:
        create_user(s, "admin", PASSWORD, "it_admin", full_name="Lê Minh Quản")
        create_user(s, "auditor", PASSWORD, "auditor", full_name="Hoàng Kiểm Toán")
    admin = client_for(srv, "admin")
    page = admin.get("/console/ade")
    assert page.status_code == 200 and "Chưa có mã thông báo nào" in page.text
    pem = admin.get("/console/ade/public-key")
    assert pem.status_code == 200 and b"BEGIN CERTIFICATE" in pem.content
    cert = x509.load_pem_x509_certificate(pem.content)
    # A token for another server's key: refused with the reason in Vietnamese, no code on the page.
    r = admin.post("/console/ade/tokens", files={"token": ("x.p7m", make_server_token(AppleDeviceCA().cert,
                                                                                     standin.add_server()))})
    assert r.status_code == 400 and "không được mã hoá cho khoá của máy chủ này" in r.text
    assert "token_not_for_this_server" not in r.text
    server = standin.add_server(expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=20, hours=1))
    standin.assign_device(server, SERIALS[0])
    r = admin.post("/console/ade/tokens", files={"token": ("t.p7m", make_server_token(cert, server))})
    assert r.status_code == 303, r.text
    page = admin.get("/console/ade").text
    assert "MDM Văn phòng Chính phủ" in page and "Còn 20 ngày" in page
    expiry = server.expiry.astimezone(dt.timezone(dt.timedelta(hours=7))).strftime("%d/%m/%Y")
    assert expiry in page
    with srv.session() as s:
        token_id = s.scalar(select(AdeToken.id))
    assert admin.post(f"/console/ade/tokens/{token_id}/sync").status_code == 303
    page = admin.get("/console/ade").text
    assert SERIALS[0] in page and "Chưa gán hồ sơ" in page
    admin.post("/console/lang", {"lang": "en", "next": "/console/ade"})
    page = admin.get("/console/ade").text
    assert "Server tokens" in page and "20 days left" in page and "No profile" in page
    auditor = client_for(srv, "auditor")
    page = auditor.get("/console/ade")
    assert page.status_code == 200 and 'id="ade-upload"' not in page.text
    assert auditor.post(f"/console/ade/tokens/{token_id}/sync").status_code == 403
    admin.close()
    auditor.close()


def test_machine_info_must_chain_to_apples_device_ca_by_default():
    """The shipped anchor is Apple's own "Apple iPhone Device CA": a device certificate from any
    other CA is refused even with a valid signature."""
    from ade import enroll
    from ade.service import APPLE_DEVICE_CA
    from tests.simulator import SimulatedIPad

    anchors = enroll.load_anchors(APPLE_DEVICE_CA)
    assert [a.subject.rfc4514_string() for a in anchors] == ["CN=Apple iPhone Device CA,OU=Apple iPhone,O=Apple Inc.,C=US"]
    sim = SimulatedIPad("https://127.0.0.1:9")
    body = sim.machine_info(AppleDeviceCA())
    with pytest.raises(enroll.MachineInfoRefused) as refused:
        enroll.read(body, anchors)
    assert refused.value.code == "machine_info_untrusted"
    assert enroll.read(body, []).serial == sim.serial  # the signature itself is sound
