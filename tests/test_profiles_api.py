"""Profiles end to end through real HTTPS: API -> signed InstallProfile -> simulator -> ack -> reconciliation."""
from __future__ import annotations

import base64
import copy
import plistlib
import subprocess

import pytest

IDENT = "vn.gov.vpcp.mdm.baseline"


def _payloads(min_length: int = 8) -> list[dict]:
    return [
        {"PayloadType": "com.apple.mobiledevice.passwordpolicy", "PayloadIdentifier": f"{IDENT}.passcode",
         "PayloadDisplayName": "Mật mã", "forcePIN": True, "minLength": min_length, "maxFailedAttempts": 10},
        {"PayloadType": "com.apple.applicationaccess", "PayloadIdentifier": f"{IDENT}.restrictions",
         "PayloadDisplayName": "Hạn chế", "allowCloudBackup": False, "allowCloudDocumentSync": False},
        {"PayloadType": "com.apple.wifi.managed", "PayloadIdentifier": f"{IDENT}.wifi",
         "PayloadDisplayName": "Wi-Fi VPCP", "SSID_STR": "VPCP-Secure", "EncryptionType": "WPA2",
         "Password": "correct horse battery", "AutoJoin": True},
    ]


@pytest.fixture
def api(server):
    token = server.api_token("it_admin")
    client = server.http(headers={"Authorization": f"Bearer {token}"})
    yield client
    client.close()


def _create(api, identifier=IDENT, payloads=None):
    r = api.post("/api/v1/profiles", json={"identifier": identifier, "display_name": "Cấu hình cơ bản",
                                           "description": "Mật mã, hạn chế, Wi-Fi", "payloads": payloads or _payloads()})
    assert r.status_code == 201, r.text
    return r.json()


def _drift(api, udid):
    r = api.get("/api/v1/profiles/drift", params={"udid": udid})
    assert r.status_code == 200, r.text
    return r.json()["drift"]


def _installation(api, udid, identifier=IDENT):
    r = api.get(f"/api/v1/profiles/{identifier}/installations")
    assert r.status_code == 200, r.text
    return next(i for i in r.json()["installations"] if i["udid"] == udid)


def _request(api, udid, request_type):
    r = api.post(f"/api/v1/devices/{udid}/commands", json={"request_type": request_type})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_install_verify_reconcile_remove(server, enrolled, api, tmp_path):
    sim = enrolled
    assert _drift(api, sim.udid) == []  # the enrollment profile alone is not drift

    created = _create(api)
    assert created["current_version"] == 1
    v1 = created["versions"][0]
    assert v1["payload_types"] == ["com.apple.mobiledevice.passwordpolicy", "com.apple.applicationaccess",
                                   "com.apple.wifi.managed"]
    assert v1["payloads"][2]["Password"] == "***"  # secrets are stored, never shown

    r = api.post(f"/api/v1/profiles/{IDENT}/assignments", json={"devices": [sim.udid]})
    assert r.status_code == 200, r.text
    assert r.json()["assignments"] == [{"target": "device", "udid": sim.udid, "created_by": "token:test-it_admin",
                                        "created_at": r.json()["assignments"][0]["created_at"]}]

    r = api.post(f"/api/v1/profiles/{IDENT}/install", json={})
    assert r.status_code == 202, r.text
    queued = r.json()["queued"]
    assert [(q["udid"], q["request_type"]) for q in queued] == [(sim.udid, "InstallProfile")]
    assert _installation(api, sim.udid)["status"] == "pending"

    server.wait_pushes()
    handled = sim.process_commands()
    # The ack queued a ProfileList so the server confirms what the device now has.
    assert [c["Command"]["RequestType"] for c in handled] == ["InstallProfile", "ProfileList"]

    # The payload is CMS SignedData that OpenSSL verifies against the instance CA.
    signed = handled[0]["Command"]["Payload"]
    (tmp_path / "profile.der").write_bytes(signed)
    out = subprocess.run(
        ["openssl", "cms", "-verify", "-CAfile", server.ca_path, "-inform", "DER",
         "-in", str(tmp_path / "profile.der"), "-out", str(tmp_path / "profile.plist")],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    plist = plistlib.loads((tmp_path / "profile.plist").read_bytes())
    assert plist["PayloadIdentifier"] == IDENT
    assert plist["PayloadUUID"] == v1["profile_uuid"]
    assert [p["PayloadType"] for p in plist["PayloadContent"]] == v1["payload_types"]
    assert plist["PayloadContent"][2]["Password"] == "correct horse battery"

    assert IDENT in sim.state.installed_profiles
    inst = _installation(api, sim.udid)
    assert inst["status"] == "installed" and inst["version"] == 1 and inst["action"] == "install"
    assert _drift(api, sim.udid) == []

    # Installing again is a no-op: the device already has this version.
    r = api.post(f"/api/v1/profiles/{IDENT}/install")
    assert r.status_code == 202 and r.json()["queued"] == []

    r = api.get(f"/api/v1/devices/{sim.udid}")
    assert r.json()["profiles"]["installations"][0]["status"] == "installed"
    assert r.json()["profiles"]["drift"] == []

    r = api.post(f"/api/v1/profiles/{IDENT}/remove", json={})
    assert r.status_code == 202, r.text
    assert [q["request_type"] for q in r.json()["queued"]] == ["RemoveProfile"]
    server.wait_pushes()
    handled = sim.process_commands()
    assert [c["Command"]["RequestType"] for c in handled] == ["RemoveProfile", "ProfileList"]
    assert handled[0]["Command"]["Identifier"] == IDENT
    assert IDENT not in sim.state.installed_profiles
    inst = _installation(api, sim.udid)
    assert inst["status"] == "removed" and inst["action"] == "remove"
    assert _drift(api, sim.udid) == []
    detail = api.get(f"/api/v1/profiles/{IDENT}").json()
    assert detail["assignments"] == []  # removing everywhere also unassigns
    assert detail["installation_counts"] == {"removed": 1}


def test_drift_missing_unexpected_outdated_and_enrollment_profile(server, enrolled, api):
    sim = enrolled
    _create(api)
    api.post(f"/api/v1/profiles/{IDENT}/assignments", json={"devices": [sim.udid]})
    api.post(f"/api/v1/profiles/{IDENT}/install")
    server.wait_pushes()
    sim.process_commands()
    v1_on_device = copy.deepcopy(sim.state.installed_profiles[IDENT])

    # The user removed our profile and installed one of their own.
    sim.state.installed_profiles.pop(IDENT)
    sim.state.installed_profiles["com.example.personal"] = {
        "PayloadIdentifier": "com.example.personal", "PayloadUUID": "11111111-2222-3333-4444-555555555555",
        "PayloadDisplayName": "Personal", "PayloadContent": []}
    _request(api, sim.udid, "ProfileList")
    server.wait_pushes()
    sim.process_commands()
    drift = {(d["identifier"], d["kind"]) for d in _drift(api, sim.udid)}
    assert drift == {(IDENT, "missing"), ("com.example.personal", "unexpected")}

    # Open drift makes "install" re-send although the server believed it installed.
    r = api.post(f"/api/v1/profiles/{IDENT}/install")
    assert len(r.json()["queued"]) == 1
    server.wait_pushes()
    sim.process_commands()
    assert {(d["identifier"], d["kind"]) for d in _drift(api, sim.udid)} == {("com.example.personal", "unexpected")}
    resolved = api.get("/api/v1/profiles/drift", params={"udid": sim.udid, "open": "false"}).json()["drift"]
    assert any(d["identifier"] == IDENT and d["kind"] == "missing" and d["resolved_at"] for d in resolved)

    # A new version rolls out; then the device is found carrying the old one.
    r = api.post(f"/api/v1/profiles/{IDENT}/versions", json={"payloads": _payloads(min_length=10)})
    assert r.status_code == 201, r.text
    v2_uuid = r.json()["profile_uuid"]
    r = api.post(f"/api/v1/profiles/{IDENT}/install")
    assert r.json()["version"] == 2 and len(r.json()["queued"]) == 1
    server.wait_pushes()
    sim.process_commands()
    assert sim.state.installed_profiles[IDENT]["PayloadUUID"] == v2_uuid
    assert sim.state.installed_profiles[IDENT]["PayloadContent"][0]["minLength"] == 10
    assert _installation(api, sim.udid)["version"] == 2
    sim.state.installed_profiles[IDENT] = v1_on_device
    sim.state.installed_profiles.pop("com.example.personal")
    _request(api, sim.udid, "ProfileList")
    server.wait_pushes()
    sim.process_commands()
    (d,) = _drift(api, sim.udid)
    assert (d["identifier"], d["kind"], d["expected_uuid"]) == (IDENT, "outdated", v2_uuid)

    # The MDM enrollment profile vanishing from the list is recorded and flagged.
    sim.profile = dict(sim.profile, PayloadIdentifier="com.example.not-ours")
    sim.state.installed_profiles[IDENT]["PayloadUUID"] = v2_uuid
    _request(api, sim.udid, "ProfileList")
    server.wait_pushes()
    sim.process_commands()
    drift = {(d["identifier"], d["kind"], d["is_enrollment_profile"]) for d in _drift(api, sim.udid)}
    assert drift == {("vn.gov.vpcp.mdm.enroll", "missing", True), ("com.example.not-ours", "unexpected", False)}
    from mdm.models import Device
    from profiles import drift
    from sqlalchemy import select
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert drift.enrollment_profile_missing(s, device)


def test_bad_payloads_are_refused_naming_the_key(server, api):
    bad = _payloads()
    bad[0]["maxFailedAttempts"] = 20
    r = api.post("/api/v1/profiles", json={"identifier": IDENT, "display_name": "x", "payloads": bad})
    assert r.status_code == 400
    assert "maxFailedAttempts" in r.json()["error"] and r.json()["key"] == "payloads[0].maxFailedAttempts"

    typo = _payloads()
    typo[1]["allowCammera"] = False  # a typo would leave the camera allowed on the device
    r = api.post("/api/v1/profiles", json={"identifier": IDENT, "display_name": "x", "payloads": typo})
    assert r.status_code == 400 and "allowCammera" in r.json()["error"]

    r = api.post("/api/v1/profiles", json={"identifier": "vn.gov.vpcp.mdm.enroll", "display_name": "x",
                                           "payloads": _payloads()})
    assert r.status_code == 400 and ".enroll" in r.json()["error"]
    r = api.post("/api/v1/profiles", json={"identifier": IDENT, "display_name": "x", "payloads": []})
    assert r.status_code == 400
    root = {"PayloadType": "com.apple.security.root", "PayloadIdentifier": f"{IDENT}.root",
            "PayloadDisplayName": "CA", "PayloadContent": {"$data": "not base64!"}}
    r = api.post("/api/v1/profiles", json={"identifier": IDENT, "display_name": "x", "payloads": [root]})
    assert r.status_code == 400 and "PayloadContent" in r.json()["error"]

    # Binary data goes in as {"$data": base64}.
    root["PayloadContent"] = {"$data": base64.b64encode(server.instance.ca.certificate_der).decode()}
    r = api.post("/api/v1/profiles", json={"identifier": IDENT, "display_name": "x", "payloads": [root]})
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/profiles", json={"identifier": IDENT, "display_name": "x", "payloads": [root]})
    assert r.status_code == 409
    assert api.get("/api/v1/profiles/com.example.none").status_code == 404


def test_permissions(server, api):
    _create(api)
    auditor = server.http(headers={"Authorization": f"Bearer {server.api_token('auditor')}"})
    assert auditor.get("/api/v1/profiles").json()["profiles"][0]["identifier"] == IDENT
    assert auditor.post(f"/api/v1/profiles/{IDENT}/install").status_code == 403
    assert auditor.post("/api/v1/profiles", json={}).status_code == 403
    assert server.http().get("/api/v1/profiles").status_code == 401
    auditor.close()


def test_new_enrollment_gets_assigned_profiles(server, api):
    _create(api)
    r = api.post(f"/api/v1/profiles/{IDENT}/assignments", json={"all": True})
    assert r.status_code == 200, r.text
    sim = server.simulator()
    try:
        sim.enroll(server.enrollment_url())
        server.wait_pushes()
        handled = sim.process_commands()
        types = [c["Command"]["RequestType"] for c in handled]
        assert "InstallProfile" in types
        assert IDENT in sim.state.installed_profiles
        assert _installation(api, sim.udid)["status"] == "installed"
        assert _drift(api, sim.udid) == []
    finally:
        sim.close()


def test_failed_install_is_recorded(server, enrolled, api):
    sim = enrolled
    sim.state.errors["InstallProfile"] = [{"ErrorCode": 4001, "ErrorDomain": "MCProfileErrorDomain",
                                           "LocalizedDescription": "Profile installation failed"}]
    _create(api)
    api.post(f"/api/v1/profiles/{IDENT}/assignments", json={"devices": [sim.udid]})
    api.post(f"/api/v1/profiles/{IDENT}/install")
    server.wait_pushes()
    sim.process_commands()
    inst = _installation(api, sim.udid)
    assert inst["status"] == "failed" and "Profile installation failed" in inst["error"]
    assert _drift(api, sim.udid) == []  # a failed install is reported as such, not as drift


def test_simulated_ipad_refuses_a_profile_whose_signature_does_not_verify(server, enrolled):
    """The simulator behaves like the iPad: a tampered or foreign-signed profile is refused with
    an error, never installed (so a server bug that sent one would show)."""
    from sqlalchemy import select

    from ipad_mdm.crypto import cms
    from ipad_mdm.crypto.keys import FileKey
    from ipad_mdm.mobileconfig import Profile, passcode_payload, sign_profile
    from mdm import commands as command_queue
    from mdm.models import Command, Device
    from tests.test_gateway import issue, self_signed_ca

    profile = Profile(identifier="vn.gov.vpcp.test.passcode", display_name="Mật mã", organization="VPCP",
                      payloads=[passcode_payload(identifier="vn.gov.vpcp.test.passcode.p", display_name="Mật mã",
                                                 min_length=6)]).to_plist_bytes()
    inst = server.instance
    good = sign_profile(profile, inst.signer_cert, inst.signer_key, [inst.ca.certificate])
    tampered = good.replace("Mật mã".encode(), "Mật mÃ".encode())
    assert tampered != good
    rogue_ca, rogue_ca_key = self_signed_ca("Rogue")
    rogue_cert, rogue_key = issue(rogue_ca, rogue_ca_key, "Rogue signer")
    foreign = cms.sign(profile, rogue_cert, FileKey(rogue_key))
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == enrolled.udid))
        uuids = [command_queue.enqueue(s, device, "InstallProfile", {"Payload": p}, requested_by="test").uuid
                 for p in (tampered, foreign, profile, good)]
    enrolled.process_commands()
    with server.session() as s:
        rows = {c.uuid: c for c in s.scalars(select(Command).where(Command.uuid.in_(uuids)))}
        statuses = [rows[u].status for u in uuids]
        assert statuses == ["error", "error", "error", "acknowledged"]
        assert rows[uuids[0]].error_chain[0]["ErrorCode"] == 1006
    assert "vn.gov.vpcp.test.passcode" in enrolled.state.installed_profiles
