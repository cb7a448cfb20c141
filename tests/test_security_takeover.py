"""Attacks on device identity, over real HTTPS against the live server (issue: identity takeover).

Each test reproduces an attack of the attack run end to end and checks the refusal, that
nothing stored changed, and that security officers are told (event in the API, the console
and the monthly report; a notification; an ERROR log line).
"""
from __future__ import annotations

import base64
import logging
import plistlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from ipad_mdm.security_events import SecurityEvent
from mdm.models import Command, Device, EnrollmentToken, IdentityCertificate
from tests import sim_scep
from tests.test_console_support import client_for, seed
from tests.test_mdm_api_cli import _cli




def api(server, role="it_admin"):
    return server.http(headers={"Authorization": f"Bearer {server.api_token(role)}"})


def enroll(server, **kw):
    sim = server.simulator(**kw)
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    return sim


def device_row(server, udid) -> dict:
    with server.session() as s:
        d = s.scalar(select(Device).where(Device.udid == udid))
        # The push sender's bookkeeping changes on its own thread after a command is queued (push
        # after commit); everything that says who the device is must stay as it was.
        volatile = {"last_seen_at", "push_pending", "last_push_at", "last_push_error", "push_failures"}
        return {c.name: getattr(d, c.name) for c in Device.__table__.columns if c.name not in volatile}


def identity_row(server, cert) -> IdentityCertificate:
    with server.session() as s:
        return s.scalar(select(IdentityCertificate).where(
            IdentityCertificate.sha256_fingerprint == cert.fingerprint(hashes.SHA256()).hex()))


def attacker_identity(server, udid, serial, **token_kw):
    """Everything an outsider can do with an ordinary one-time token: profile, SCEP, a valid identity."""
    attacker = server.simulator(udid=udid, serial=serial)
    with server.http() as http:
        profile = http.get(server.enrollment_url(**token_kw))
    assert profile.status_code == 200
    attacker.install_enrollment_profile(profile.content)
    attacker.scep_enroll()
    return attacker


def events(server, kind=None):
    with server.session() as s:
        stmt = select(SecurityEvent).order_by(SecurityEvent.id)
        if kind:
            stmt = stmt.where(SecurityEvent.kind == kind)
        return list(s.scalars(stmt))


# ------------------------------------------------------------------ the critical finding
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("token_binding", ["unbound", "bound_to_attacker_serial"])
def test_udid_takeover_is_refused_and_reported(server, notifier, caplog, tmp_path, token_binding):
    victim = enroll(server, serial="DMPVICTIM001")
    admin = api(server)
    r = admin.post(f"/api/v1/devices/{victim.udid}/commands", json={"request_type": "DeviceInformation"})
    assert r.status_code == 201
    queued_uuid = r.json()["command_uuid"]
    before = device_row(server, victim.udid)

    kw = {"serial_number": "ATTACKER0001"} if token_binding == "bound_to_attacker_serial" else {}
    attacker = attacker_identity(server, victim.udid, "ATTACKER0001" if kw else victim.serial, **kw)
    caplog.set_level(logging.INFO)
    r = attacker.authenticate()
    assert r.status_code == 403
    assert "already enrolled" in r.json()["error"] and f"ipad-mdm device re-enroll {victim.udid}" in r.json()["error"]
    # The identity that tried is revoked at once; TokenUpdate, CheckOut and connect with it fail.
    assert attacker.token_update().status_code == 403
    assert attacker.connect("Idle").status_code == 403
    assert attacker.checkout().status_code == 403

    # Nothing of the victim changed: serial, name, push token, state, identity.
    assert device_row(server, victim.udid) == before
    assert identity_row(server, victim.identity).revoked_at is None
    stolen = identity_row(server, attacker.identity)
    assert stolen.revoked_at is not None and stolen.revocation_reason == "privilegeWithdrawn"
    assert stolen.device_id is None
    with server.session() as s:
        assert s.scalar(select(Command).where(Command.uuid == queued_uuid)).status == "queued"

    # Recorded once, shown to security officers, e-mailed, logged at ERROR.
    [event] = events(server, "device_takeover_attempt")
    assert event.udid == victim.udid and event.severity == "critical" and event.source_ip == "127.0.0.1"
    assert event.details["certificate_serial"] == stolen.serial and event.details["certificate_revoked"] is True
    assert "iPad UDID" in event.summary_vi and "chứng thư số mới đã bị thu hồi" in event.summary_vi
    critical = [n for n in notifier.wait_for(1) if "[CRITICAL]" in n.subject]
    assert len(critical) == 1 and victim.udid in critical[0].body and critical[0].recipients == ["attt@vpcp.gov.vn"]
    assert "Cố gắng chiếm quyền định danh" in critical[0].subject
    assert any(r.levelno == logging.ERROR and "SECURITY EVENT" in r.getMessage() for r in caplog.records)
    officer = api(server, "security_officer")
    listed = officer.get("/api/v1/security-events", params={"open": "1"}).json()
    assert [e["kind"] for e in listed["events"]] == ["device_takeover_attempt"]
    assert listed["events"][0]["title_vi"] == "Cố gắng chiếm quyền định danh của thiết bị đã đăng ký"
    assert api(server, "it_admin").get("/api/v1/security-events").status_code == 403

    # The real iPad goes on as before and gets its queued command.
    handled = victim.process_commands()
    assert [c["CommandUUID"] for c in handled] == [queued_uuid]
    for c in (admin, officer):
        c.close()
    attacker.close()
    victim.close()


def test_takeover_shows_in_console_and_monthly_report(server, notifier):
    from reports.month import compute_month
    from reports.periods import Month

    seed(server)
    victim = enroll(server)
    attacker = attacker_identity(server, victim.udid, victim.serial)
    assert attacker.authenticate().status_code == 403
    # Another device's genuine identity naming the victim's UDID: refused, recorded (not revoked).
    other = enroll(server)
    assert other.checkin({"MessageType": "TokenUpdate", "Topic": other.mdm_payload["Topic"], "UDID": victim.udid,
                          "Token": b"\x01" * 32, "PushMagic": "x"}).status_code == 403
    assert identity_row(server, other.identity).revoked_at is None
    assert [e.kind for e in events(server)] == ["device_takeover_attempt", "identity_mismatch"]

    officer = client_for(server, "security")
    page = officer.get("/console/security-events")
    assert page.status_code == 200 and "Cố gắng chiếm quyền định danh" in page.text and victim.udid in page.text
    event_id = events(server)[0].id
    r = officer.post(f"/console/security-events/{event_id}/acknowledge", {"note": "Đã kiểm tra, thu hồi mã"})
    assert r.status_code == 302
    assert events(server)[0].acknowledged_by == "user:security"
    auditor = client_for(server, "auditor")
    assert auditor.get("/console/security-events").status_code == 200
    assert auditor.post(f"/console/security-events/{event_id}/acknowledge", {"note": "x"}).status_code == 403
    assert client_for(server, "admin").get("/console/security-events").status_code == 403

    with server.instance.database.engine.connect() as conn:
        from ipad_mdm.db import utcnow

        figures = compute_month(conn, Month.containing(utcnow()))
    incidents = figures.tables["incidents"]
    assert dict(zip(incidents["kind"], incidents["count"])) == {"device_takeover_attempt": 1, "identity_mismatch": 1}
    assert figures.kpis["takeover_attempts"] == 1 and figures.kpis["security_incidents"] == 2


# ------------------------------------------------------------------ re-enrollment
def test_erased_ipad_needs_explicit_reenrollment(server, notifier):
    victim = enroll(server, serial="DMPERASED001")
    old_identity = victim.identity
    # The iPad was erased: same UDID and serial, new key, an ordinary token.
    erased = attacker_identity(server, victim.udid, victim.serial)
    r = erased.authenticate()
    assert r.status_code == 403 and "re-enroll" in r.json()["error"]
    assert [e.kind for e in events(server)] == ["device_takeover_attempt"]

    # IT authorises it (API); the token only works for this device.
    admin = api(server)
    r = admin.post(f"/api/v1/devices/{victim.udid}/re-enroll")
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["udid"] == victim.udid and grant["serial_number"] == "DMPERASED001"
    # Used by another device, the re-enrollment token is refused and nothing is bound.
    intruder = server.simulator()
    with server.http() as http:
        intruder.install_enrollment_profile(http.get(grant["url"]).content)
    intruder.scep_enroll()
    r = intruder.authenticate()
    assert r.status_code == 403 and "another device" in r.json()["error"]
    with server.session() as s:
        assert s.scalar(select(Device).where(Device.udid == intruder.udid)) is None
    assert identity_row(server, intruder.identity).revoked_at is not None

    unused = admin.post(f"/api/v1/devices/{victim.udid}/re-enroll").json()
    grant = admin.post(f"/api/v1/devices/{victim.udid}/re-enroll").json()
    with server.session() as s:  # an unused earlier grant is withdrawn by the new one
        assert s.get(EnrollmentToken, unused["id"]).revoked_at is not None
        assert s.get(EnrollmentToken, grant["id"]).revoked_at is None
    reborn = server.simulator(udid=victim.udid, serial=victim.serial)
    reborn.enroll(grant["url"])
    server.wait_pushes()
    reborn.process_commands()
    assert identity_row(server, old_identity).revocation_reason == "superseded"
    assert identity_row(server, reborn.identity).revoked_at is None
    assert device_row(server, victim.udid)["enrollment_state"] == "enrolled"
    assert victim.connect("Idle").status_code == 403  # the old identity is dead
    assert [e.kind for e in events(server)] == ["device_takeover_attempt", "unauthorised_reenrollment",
                                                "device_reenrolled"]
    admin.close()


def test_reenroll_from_the_console(server, notifier):
    seed(server)
    victim = enroll(server)
    security = client_for(server, "security")
    page = security.get(f"/console/devices/{victim.udid}")
    assert page.status_code == 200 and "reenroll-form" not in page.text  # IT's action, not security's
    assert security.post(f"/console/devices/{victim.udid}/re-enroll").status_code == 403
    admin = client_for(server, "admin")
    page = admin.get(f"/console/devices/{victim.udid}")
    assert "Cho phép đăng ký lại" in page.text
    r = admin.post(f"/console/devices/{victim.udid}/re-enroll")
    assert r.status_code == 200 and "Đăng ký lại thiết bị" in r.text
    url = __import__("re").search(r'id="reenroll-url">([^<]+)<', r.text).group(1).replace("&amp;", "&")
    reborn = server.simulator(udid=victim.udid, serial=victim.serial)
    reborn.enroll(url)
    assert identity_row(server, victim.identity).revocation_reason == "superseded"
    with server.session() as s:
        assert s.scalar(select(EnrollmentToken).where(EnrollmentToken.reenroll_device_id.is_not(None))).created_by \
            == "user:admin"


def test_reenroll_cli_and_serial_checks(server, notifier):
    victim = enroll(server, serial="DMPCLI000001")
    out = _cli(server, "device", "re-enroll", victim.udid, "--json")
    grant = __import__("json").loads(out.stdout)
    assert grant["udid"] == victim.udid and grant["url"].startswith(server.url + "/mdm/enroll?token=")
    # The erased iPad reports another serial than the one on record: refused.
    liar = server.simulator(udid=victim.udid, serial="DMPOTHER0001")
    with server.http() as http:
        liar.install_enrollment_profile(http.get(grant["url"]).content)
    liar.scep_enroll()
    r = liar.authenticate()
    assert r.status_code == 403 and "serial number" in r.json()["error"]
    assert _cli(server, "device", "re-enroll", "NOT-A-DEVICE-UDID-000000", check=False).returncode == 1

    # A token bound to a serial is checked against the serial already on record for the UDID too.
    with server.session() as s:
        s.add(Device(udid="0000AAAA-1111-2222-3333-444455556666", serial_number="DMPRECORD001",
                     enrollment_state="authenticated"))
    sneaky = attacker_identity(server, "0000AAAA-1111-2222-3333-444455556666", "DMPSNEAKY001",
                               serial_number="DMPSNEAKY001")
    r = sneaky.authenticate()
    assert r.status_code == 403 and "on record" in r.json()["error"]
    assert device_row(server, "0000AAAA-1111-2222-3333-444455556666")["serial_number"] == "DMPRECORD001"


def test_replayed_authenticate_changes_nothing(server):
    sim = server.simulator()
    with server.http() as http:
        sim.install_enrollment_profile(http.get(server.enrollment_url()).content)
    sim.scep_enroll()
    body = plistlib.dumps({
        "MessageType": "Authenticate", "Topic": sim.mdm_payload["Topic"], "UDID": sim.udid,
        "SerialNumber": sim.serial, "OSVersion": "18.1", "DeviceName": "iPad"})
    headers = {"Mdm-Signature": sim.sign(body), "Content-Type": "application/x-apple-aspen-mdm-checkin"}
    url = sim.mdm_payload["CheckInURL"]
    assert sim.client.put(url, content=body, headers=headers).status_code == 200
    assert sim.token_update().status_code == 200
    server.wait_pushes()
    before = device_row(server, sim.udid)
    assert before["enrollment_state"] == "enrolled" and before["push_token"] == sim.push_token.hex()
    # The captured Authenticate, sent again byte for byte.
    assert sim.client.put(url, content=body, headers=headers).status_code == 200
    assert device_row(server, sim.udid) == before
    assert sim.process_commands()  # still reachable, with its inventory commands


# ------------------------------------------------------------------ renewal
def _renewal_request(sim, signer_cert, signer_key):
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message, _tid, _ = sim_scep.build_pkcs_req(sim.scep_recipient, new_key, sim.identity.subject, None,
                                               message_type="17", signer=(signer_cert, signer_key))
    return message, new_key


def test_identity_renewal_cannot_be_repeated(server, notifier):
    sim = enroll(server)
    old_cert, old_key = sim.identity, sim.key
    message, new_key = _renewal_request(sim, old_cert, old_key)
    with server.http() as http:
        r = http.post("/scep", params={"operation": "PKIOperation"}, content=message)
    renewed = sim_scep.parse_cert_rep(r.content, sim.scep_recipient, old_key, old_cert, csr_key=new_key.public_key())

    # A second renewal while the first is unused: refused (the attack collected five).
    for _ in range(3):
        message, _ = _renewal_request(sim, old_cert, old_key)
        with server.http() as http:
            r = http.post("/scep", params={"operation": "PKIOperation"}, content=message)
        with pytest.raises(sim_scep.SCEPFailure):
            sim_scep.parse_cert_rep(r.content, sim.scep_recipient, old_key, old_cert)
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert s.scalar(select(IdentityCertificate.id).where(IdentityCertificate.device_id == device.id)
                        .order_by(IdentityCertificate.id.desc())) is not None
        assert len(list(s.scalars(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id)))) == 2
    assert [e.kind for e in events(server)] == ["identity_renewal_refused"]  # once, not three times

    # The device uses the new identity: the old one is revoked as superseded at that moment.
    assert identity_row(server, old_cert).revoked_at is None
    sim.identity, sim.key = renewed, new_key
    assert sim.connect("Idle").status_code == 200
    assert identity_row(server, old_cert).revocation_reason == "superseded"
    # A renewal signed by the superseded identity is refused, and so is any check-in with it.
    message, _ = _renewal_request(sim, old_cert, old_key)
    with server.http() as http:
        r = http.post("/scep", params={"operation": "PKIOperation"}, content=message)
    with pytest.raises(sim_scep.SCEPFailure):
        sim_scep.parse_cert_rep(r.content, sim.scep_recipient, old_key, old_cert)
    body = plistlib.dumps({"UDID": sim.udid, "Status": "Idle"})
    from ipad_mdm.crypto import cms
    from ipad_mdm.crypto.keys import FileKey

    sig = base64.b64encode(cms.sign(body, old_cert, FileKey(old_key), detached=True)).decode()
    r = sim.client.put(sim.mdm_payload["ServerURL"], content=body, headers={"Mdm-Signature": sig})
    assert r.status_code == 403 and "revoked" in r.json()["error"]
