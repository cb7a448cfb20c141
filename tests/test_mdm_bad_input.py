"""Every bad input gets a clear 4xx, a log line, and changes nothing stored."""
from __future__ import annotations

import base64
import datetime as dt
import logging
import plistlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select, update

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import FileKey
from mdm.models import CheckinEvent, Command, Device, EnrollmentToken, IdentityCertificate

from tests.sim_scep import SCEPFailure


def _counts(server):
    with server.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Device, Command, CheckinEvent, IdentityCertificate))


def _snapshot(server, udid):
    with server.session() as s:
        d = s.scalar(select(Device).where(Device.udid == udid))
        return (d.enrollment_state, d.push_token, d.push_magic, d.os_version, d.last_seen_at)


# ------------------------------------------------------------------ enrollment tokens

def test_enrollment_token_unknown_used_expired(server, caplog):
    http = server.http()
    r = http.get("/mdm/enroll", params={"token": "not-a-token"})
    assert r.status_code == 403 and r.json()["error"] == "unknown enrollment token"
    r = http.get("/mdm/enroll")
    assert r.status_code == 403 and "missing" in r.json()["error"]

    url = server.enrollment_url()
    assert http.get(url).status_code == 200
    r = http.get(url)
    assert r.status_code == 403 and r.json()["error"] == "enrollment token was already used"

    url = server.enrollment_url()
    with server.session() as s:
        s.execute(update(EnrollmentToken).where(EnrollmentToken.profile_fetched_at.is_(None))
                  .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)))
    r = http.get(url)
    assert r.status_code == 403 and r.json()["error"] == "enrollment token has expired"
    assert "enrollment token has expired" in caplog.text


def test_enrollment_profile_is_signed_and_verifies_with_openssl(server, tmp_path):
    import subprocess

    r = server.http().get(server.enrollment_url())
    assert r.headers["content-type"] == "application/x-apple-aspen-config"
    signed = tmp_path / "enroll.mobileconfig"
    signed.write_bytes(r.content)
    out = subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", str(signed), "-CAfile", server.ca_path,
         "-purpose", "any"],
        capture_output=True, check=True,
    )
    profile = plistlib.loads(out.stdout)
    types = [p["PayloadType"] for p in profile["PayloadContent"]]
    assert types == ["com.apple.security.root", "com.apple.security.scep", "com.apple.mdm"]
    mdm = profile["PayloadContent"][2]
    assert mdm["AccessRights"] == 8191 and mdm["SignMessage"] is True and mdm["CheckOutWhenRemoved"] is True
    scep = profile["PayloadContent"][1]["PayloadContent"]
    assert scep["Keysize"] == 2048 and scep["Key Type"] == "RSA" and len(scep["Challenge"]) >= 24
    # A tampered profile no longer verifies.
    tampered = bytearray(r.content)
    idx = tampered.find(b"ServerURL")
    tampered[idx] ^= 0x01
    signed.write_bytes(bytes(tampered))
    bad = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(signed), "-CAfile", server.ca_path,
                          "-purpose", "any"], capture_output=True)
    assert bad.returncode != 0


def test_serial_bound_token_refuses_other_device(server):
    sim = server.simulator(serial="SERIAL-A")
    url = server.enrollment_url(serial_number="SERIAL-B")
    with pytest.raises(AssertionError, match="serial number does not match"):
        sim.enroll(url)
    with server.session() as s:
        assert s.scalar(select(func.count()).select_from(Device)) == 0


# ------------------------------------------------------------------ SCEP

def test_scep_challenge_is_single_use_and_must_match(server):
    sim = server.simulator()
    sim.install_enrollment_profile(server.http().get(server.enrollment_url()).content)
    with pytest.raises(SCEPFailure) as refused:
        sim.scep_enroll(challenge="wrong-challenge")
    assert (refused.value.status, refused.value.fail_info) == ("FAILURE", "badRequest")
    sim.scep_enroll()
    with pytest.raises(SCEPFailure) as refused:
        sim.scep_enroll()  # same challenge again
    assert (refused.value.status, refused.value.fail_info) == ("FAILURE", "badRequest")
    with server.session() as s:
        assert s.scalar(select(func.count()).select_from(IdentityCertificate)) == 1


def test_scep_garbage_and_unknown_operation(server):
    http = server.http()
    r = http.post("/scep", params={"operation": "PKIOperation"}, content=b"\x30\x03garbage")
    assert r.status_code == 400 and r.json()["error"].startswith("SCEP:")
    r = http.get("/scep", params={"operation": "Bogus"})
    assert r.status_code == 400
    r = http.post("/scep", params={"operation": "PKIOperation"}, content=b"x" * (300 * 1024))
    assert r.status_code == 413
    caps = http.get("/scep", params={"operation": "GetCACaps"}).text.split()
    assert {"AES", "SHA-256", "POSTPKIOperation"} <= set(caps)


# ------------------------------------------------------------------ device authentication

def test_unsigned_forged_tampered_and_foreign_messages(enrolled, server, caplog):
    before = _counts(server)
    snap = _snapshot(server, enrolled.udid)
    msg = {"MessageType": "TokenUpdate", "Topic": enrolled.mdm_payload["Topic"], "UDID": enrolled.udid,
           "Token": b"\x01" * 32, "PushMagic": "EVIL"}

    # Unsigned.
    r = enrolled.checkin(msg, sign=False)
    assert r.status_code == 401 and "not signed" in r.json()["error"]

    # Signature over another body (tampered in transit).
    body = plistlib.dumps(msg)
    sig = enrolled.sign(body + b" ")
    r = enrolled.client.put(enrolled.mdm_payload["CheckInURL"], content=body, headers={"Mdm-Signature": sig})
    assert r.status_code == 401 and "digest" in r.json()["error"]

    # Not base64 / not CMS.
    r = enrolled.client.put(enrolled.mdm_payload["CheckInURL"], content=body, headers={"Mdm-Signature": "%%%"})
    assert r.status_code == 401
    r = enrolled.client.put(enrolled.mdm_payload["CheckInURL"], content=body,
                            headers={"Mdm-Signature": base64.b64encode(b"\x30\x82junk").decode()})
    assert r.status_code == 401

    # Validly signed, but by a self-made certificate claiming the same subject (forged identity).
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = (x509.CertificateBuilder().subject_name(enrolled.identity.subject).issuer_name(enrolled.identity.issuer)
              .public_key(key.public_key()).serial_number(enrolled.identity.serial_number)
              .not_valid_before(enrolled.identity.not_valid_before_utc).not_valid_after(enrolled.identity.not_valid_after_utc)
              .sign(key, hashes.SHA256()))
    sig = base64.b64encode(cms.sign(body, forged, FileKey(key), detached=True)).decode()
    r = enrolled.client.put(enrolled.mdm_payload["CheckInURL"], content=body, headers={"Mdm-Signature": sig})
    assert r.status_code == 403 and "not issued by this server's CA" in r.json()["error"]

    # Another enrolled device's genuine certificate, claiming this UDID.
    other = server.simulator()
    other.enroll(server.enrollment_url())
    server.wait_pushes()
    other_before = _counts(server)
    r = other.checkin(msg)
    assert r.status_code == 403 and "UDID does not match" in r.json()["error"]
    r = other.put(other.mdm_payload["ServerURL"], {"UDID": enrolled.udid, "Status": "Idle"})
    assert r.status_code == 403

    assert _snapshot(server, enrolled.udid) == snap
    assert _counts(server) == other_before
    assert before[0] + 1 == other_before[0]
    assert "Mdm-Signature rejected" in caplog.text
    other.close()


def test_expired_and_revoked_identity_refused(enrolled, server):
    # Revoked.
    with server.session() as s:
        s.execute(update(IdentityCertificate).values(revoked_at=dt.datetime.now(dt.timezone.utc), revocation_reason="keyCompromise"))
    r = enrolled.connect("Idle")
    assert r.status_code == 403 and "revoked" in r.json()["error"]

    # Expired: a genuine certificate from our CA whose validity has ended.
    ca = server.instance.ca
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography.x509 import CertificateBuilder

    now = dt.datetime.now(dt.timezone.utc)
    builder = (CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
               .issuer_name(ca.certificate.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=400)).not_valid_after(now - dt.timedelta(days=1)))
    from ipad_mdm.crypto.ca import sign_certificate

    expired = sign_certificate(builder, ca.key)
    body = plistlib.dumps({"UDID": enrolled.udid, "Status": "Idle"})
    sig = base64.b64encode(cms.sign(body, expired, FileKey(key), detached=True)).decode()
    r = enrolled.client.put(enrolled.mdm_payload["ServerURL"], content=body, headers={"Mdm-Signature": sig})
    assert r.status_code == 403 and "expired" in r.json()["error"]


def test_unknown_device_must_authenticate_first(server):
    sim = server.simulator()
    sim.install_enrollment_profile(server.http().get(server.enrollment_url()).content)
    sim.scep_enroll()
    r = sim.token_update()
    assert r.status_code == 403 and "Authenticate first" in r.json()["error"]
    r = sim.connect("Idle")
    assert r.status_code == 403
    with server.session() as s:
        assert s.scalar(select(func.count()).select_from(Device)) == 0


# ------------------------------------------------------------------ malformed messages

@pytest.mark.parametrize("body,reason", [
    (b"<plist><dict><key>Message", "malformed plist"),
    (b"not a plist at all", "malformed plist"),
    (plistlib.dumps([1, 2, 3]), "top level"),
    (b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><plist><dict><key>a</key><string>&lol2;</string></dict></plist>""", "malformed plist"),
])
def test_malformed_checkin_bodies(enrolled, body, reason):
    sig = enrolled.sign(body)
    r = enrolled.client.put(enrolled.mdm_payload["CheckInURL"], content=body, headers={"Mdm-Signature": sig})
    assert r.status_code == 400 and reason in r.json()["error"]


def test_unknown_message_type_and_missing_keys(enrolled):
    r = enrolled.checkin({"MessageType": "FlyToTheMoon", "UDID": enrolled.udid, "Topic": "x"})
    assert r.status_code == 400 and "unsupported MessageType" in r.json()["error"]
    r = enrolled.checkin({"MessageType": "TokenUpdate", "UDID": enrolled.udid, "Topic": "x"})
    assert r.status_code == 400 and "Token" in r.json()["error"]
    r = enrolled.checkin({"MessageType": "TokenUpdate", "UDID": enrolled.udid, "Topic": "x", "Token": "notdata", "PushMagic": "m"})
    assert r.status_code == 400 and "Token must be bytes" in r.json()["error"]
    r = enrolled.connect("Exploded")
    assert r.status_code == 400
    r = enrolled.connect("Acknowledged")  # no CommandUUID
    assert r.status_code == 400 and "CommandUUID" in r.json()["error"]


def test_deeply_nested_and_oversized_bodies(enrolled, server):
    nested: dict = {"MessageType": "Authenticate"}
    cur = nested
    for _ in range(100):
        cur["x"] = {}
        cur = cur["x"]
    body = plistlib.dumps(nested)
    r = enrolled.client.put(enrolled.mdm_payload["CheckInURL"], content=body, headers={"Mdm-Signature": enrolled.sign(body)})
    assert r.status_code == 400 and "nested deeper" in r.json()["error"]

    big = b"A" * (server.instance.settings.max_body_bytes + 1)
    r = enrolled.client.put(enrolled.mdm_payload["CheckInURL"], content=big, headers={"Mdm-Signature": "x"})
    assert r.status_code == 413


# ------------------------------------------------------------------ command queue rules

def test_notnow_error_and_format_error(enrolled, server):
    token = server.api_token("it_admin")
    http = server.http(headers={"Authorization": f"Bearer {token}"})

    def send(rt, params=None):
        r = http.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": rt, "params": params})
        assert r.status_code == 201, r.text
        return r.json()["command_uuid"]

    first = send("SecurityInfo")
    second = send("ProfileList")
    enrolled.state.not_now = {"SecurityInfo"}
    handled = enrolled.process_commands()
    # NotNow: skipped for this connection, the next command still delivered.
    assert [c["Command"]["RequestType"] for c in handled] == ["SecurityInfo", "ProfileList"]
    assert http.get(f"/api/v1/commands/{first}").json()["status"] == "notnow"
    assert http.get(f"/api/v1/commands/{second}").json()["status"] == "acknowledged"
    # Next Idle: the NotNow command comes back and now succeeds.
    enrolled.state.not_now = set()
    handled = enrolled.process_commands()
    assert [c["CommandUUID"] for c in handled] == [first]
    detail = http.get(f"/api/v1/commands/{first}").json()
    assert detail["status"] == "acknowledged" and detail["attempts"] == 2
    assert [h["status"] for h in detail["history"]] == ["queued", "sent", "notnow", "sent", "acknowledged"]

    # Error keeps the ErrorChain.
    chain = [{"ErrorCode": 12081, "ErrorDomain": "MCMDMErrorDomain", "LocalizedDescription": "Thiết bị bận",
              "USEnglishDescription": "Device busy"}]
    enrolled.state.errors = {"RestartDevice": chain}
    err = send("RestartDevice")
    enrolled.process_commands()
    detail = http.get(f"/api/v1/commands/{err}").json()
    assert detail["status"] == "error" and detail["error_chain"] == chain
    assert "MCMDMErrorDomain 12081" in detail["history"][-1]["detail"]

    # CommandFormatError.
    fmt = send("DeviceLock", {"Message": "Khóa"})
    r = enrolled.connect("Idle")
    cmd = plistlib.loads(r.content)
    assert cmd["CommandUUID"] == fmt
    r = enrolled.connect("CommandFormatError", fmt)
    assert r.status_code == 200 and r.content == b""
    assert http.get(f"/api/v1/commands/{fmt}").json()["status"] == "command_format_error"

    # A duplicate answer (client retry) does not overwrite the first result.
    r = enrolled.connect("Acknowledged", fmt)
    assert r.status_code == 200
    assert http.get(f"/api/v1/commands/{fmt}").json()["status"] == "command_format_error"


def test_answer_for_unknown_command_is_ignored(enrolled, caplog):
    caplog.set_level(logging.WARNING)
    r = enrolled.connect("Acknowledged", "00000000-0000-0000-0000-000000000000")
    assert r.status_code == 200 and r.content == b""
    assert "unknown command" in caplog.text


def test_checkout_revokes_and_stops_commands(enrolled, server):
    r = enrolled.checkout()
    assert r.status_code == 200
    with server.session() as s:
        d = s.scalar(select(Device).where(Device.udid == enrolled.udid))
        assert d.enrollment_state == "checked_out" and d.push_token is None
        assert all(c.revoked_at is not None for c in d.certificates)
    token = server.api_token("it_admin")
    r = server.http(headers={"Authorization": f"Bearer {token}"}).post(
        f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "DeviceInformation"})
    assert r.status_code in (400, 403)
    r = enrolled.connect("Idle")
    assert r.status_code == 403


def test_install_profile_payload_forgotten_after_answer(enrolled, server):
    """A profile may carry private keys: once the device answered, only its digest stays."""
    import hashlib

    from mdm import commands

    payload = b"secret-profile-bytes" * 10
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == enrolled.udid))
        cmd = commands.enqueue(s, device, "InstallProfile", {"Payload": payload}, requested_by="test")
        uuid = cmd.uuid
    enrolled.state.errors = {"InstallProfile": [{"ErrorCode": 4001, "ErrorDomain": "MCProfileErrorDomain"}]}
    enrolled.process_commands()
    with server.session() as s:
        stored = s.scalar(select(Command).where(Command.uuid == uuid))
        assert stored.status == "error"
        assert payload not in stored.command_plist
        body = plistlib.loads(stored.command_plist)["Command"]
        assert body["Payload"] == b"" and body["PayloadSHA256"] == hashlib.sha256(payload).hexdigest()
