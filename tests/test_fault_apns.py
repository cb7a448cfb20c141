"""Issue #22, item 4: the APNs push certificate refused, expiring, renewed, or replaced by one with
another topic, on the production stack (gunicorn + PostgreSQL + Redis + a Celery worker pushing to an
HTTP/2 APNs stand-in that requires client certificates of a test "Apple" CA, as Apple does).

Checked: a refusal of the certificate (403 BadCertificate) stops pushing for the whole fleet (no
hammering of Apple, no failure counted against the iPads), raises one critical alert, and shows in
the API and the console; the expiry warning comes once per threshold; a renewal installed with the
CLI is used by every process at its next push without a restart and the waiting pushes go out, each
command acknowledged once; a certificate with another topic is refused unless confirmed, and when
confirmed and then refused by APNs for the enrolled tokens, that is detected and said."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ipad_mdm.security_events import SecurityEvent
from mdm.models import Device
from mdm.pushcert.certificate import (PushCertificateRefused, check_topic, classify, describe, validate_pair,
                                      warning_due, TopicChangeRefused)
from tests.simulator import SimulatedIPad
from tests.test_console_support import PASSWORD, ConsoleClient
from tests.test_production_stack import BIN, ROOT, _assert_each_acknowledged_once, open_stack

NOW = dt.datetime.now(dt.timezone.utc)


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class AppleStandInCA:
    """Issues push certificates the way Apple's push certificate portal does: subject UID = topic."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Apple Application Integration 2 CA (test)")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
                     .not_valid_after(NOW + dt.timedelta(days=800))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def push_cert(self, topic: str, days: int, key=None) -> tuple[bytes, bytes]:
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.USER_ID, topic),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic.rsplit('.', 1)[-1]}")])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=days))
                .sign(self.key, hashes.SHA256()))
        return _pem(cert), _pem(key)


# --------------------------------------------------------------------------- the rules, without a server

def test_push_certificate_rules():
    ca = AppleStandInCA()
    cert_pem, key_pem = ca.push_cert("com.apple.mgmt.External.aaa", 365)
    _cert, info = validate_pair(cert_pem, key_pem, NOW)
    assert info.topic == "com.apple.mgmt.External.aaa" and not info.self_signed
    other_key = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(PushCertificateRefused, match="does not belong") as refused:
        validate_pair(cert_pem, other_key, NOW)
    assert "không khớp" in refused.value.message("vi")
    with pytest.raises(PushCertificateRefused, match="not an MDM push certificate"):
        validate_pair(*ca.push_cert("com.example.app", 365), NOW)
    with pytest.raises(PushCertificateRefused, match="not a PEM"):
        validate_pair(b"garbage", key_pem, NOW)
    with pytest.raises(PushCertificateRefused, match="expired"):
        validate_pair(cert_pem, key_pem, NOW + dt.timedelta(days=400))

    # The topic guard: a different topic strands the enrolled iPads unless confirmed.
    assert check_topic("t1", {"t1": 5}, confirmed=False) == {}
    with pytest.raises(TopicChangeRefused) as refused:
        check_topic("t2", {"t1": 5, "t2": 1}, confirmed=False)
    assert refused.value.enrolled == {"t1": 5} and "Renew" in str(refused.value) and "đăng ký lại" in refused.value.vi
    assert check_topic("t2", {"t1": 5}, confirmed=True) == {"t1": 5}

    # What an APNs answer says about the certificate.
    assert classify(403, "BadCertificate") == classify(403, "ExpiredProviderToken") == "certificate"
    assert classify(None, "TLS: CERTIFICATE_VERIFY_FAILED", "TLS: CERTIFICATE_VERIFY_FAILED") == "certificate"
    assert classify(400, "DeviceTokenNotForTopic") == classify(400, "BadTopic") == "topic"
    assert classify(400, "BadDeviceToken") is None and classify(410, "Unregistered") is None
    assert classify(503, "ServiceUnavailable") is None

    # Warnings at 30, 14 and 7 days and at expiry, each once.
    info = describe(x509.load_pem_x509_certificate(ca.push_cert("com.apple.mgmt.x", 40)[0]))
    at = lambda days_left: info.not_after - dt.timedelta(days=days_left, hours=1)  # noqa: E731
    assert warning_due(info, at(35), None) is None
    assert warning_due(info, at(29), None) == 30 and warning_due(info, at(29), 30) is None
    assert warning_due(info, at(13), 30) == 14 and warning_due(info, at(6), 14) == 7
    assert warning_due(info, info.not_after + dt.timedelta(hours=1), 7) == 0
    assert warning_due(info, at(3), None) == 7  # a server started late warns at the nearest threshold only


# --------------------------------------------------------------------------- the production stack

@pytest.fixture
def apns_stack(tmp_path):
    ca = AppleStandInCA()
    topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
    first_pem, first_key = ca.push_cert(topic, 20)  # 20 days left: the 30-day warning is due

    def install_first(instance_dir):
        (instance_dir / "ca" / "push.pem").write_bytes(first_pem)
        (instance_dir / "secrets" / "push.key").write_bytes(first_key)

    with open_stack(tmp_path, prepare=install_first, apns_client_ca=_pem(ca.cert), apns_topic=topic) as st:
        st.apple, st.topic = ca, topic
        yield st


def _wait(check, what: str, attempts: int = 200):
    """Poll until the worker has done it; a bound for a worker that never does, not a timing check."""
    for _ in range(attempts):
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def _events(stack, kind):
    with stack.session() as s:
        return list(s.scalars(select(SecurityEvent).where(SecurityEvent.kind == kind)))


def _cli(stack, *args, check=True):
    out = subprocess.run([str(BIN / "ipad-mdm"), *args], env=stack.env, capture_output=True, text=True, cwd=ROOT)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_push_certificate_refused_renewed_and_topic_guarded(apns_stack, tmp_path):
    stack = apns_stack
    token = json.loads(_cli(stack, "api-token", "create", "--name", "ops", "--role", "it_admin", "--json").stdout)["token"]
    api = httpx.Client(base_url=stack.url, verify=stack.verify, headers={"Authorization": f"Bearer {token}"},
                       timeout=60)
    sim = SimulatedIPad(stack.url, verify=stack.verify)
    sim.enroll(stack.enrollment_url())
    _wait(lambda: [p for p in stack.apns.pushes if p.token == sim.push_token.hex()], "the enrollment push")
    stack.wait_provisioned(sim)
    sim.process_commands()
    with stack.session() as s:
        assert s.scalar(select(Device.topic).where(Device.udid == sim.udid)) == stack.topic

    # Expiry: the daily job warns once at the 30-day threshold; the state says "expiring".
    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance
    from mdm.pushcert.service import expiry_warning

    inst = open_instance(load_settings(stack.instance_dir, database_url=stack.env["DATABASE_URL"],
                                       base_url=stack.url), migrate=False)
    with inst.database.session() as s:
        assert expiry_warning(s, inst)["threshold"] == 30
    with inst.database.session() as s:
        assert expiry_warning(s, inst) is None  # once per threshold
    warned = _events(stack, "push_certificate_expiring")
    assert len(warned) == 1 and "Renew" in warned[0].summary_en and "/" in warned[0].summary_vi
    state = api.get("/api/v1/push-certificate").json()
    assert state["state"] == "expiring" and state["certificate"]["topic"] == stack.topic
    assert state["enrolled_by_topic"] == {stack.topic: 1} and state["certificate"]["days_left"] in (19, 20)

    # Apple refuses the certificate (revoked): one push tried, then the fleet is held, not hammered.
    stack.apns.fail_next(1, 403, "BadCertificate")
    sent = []
    r = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "SecurityInfo"})
    assert r.status_code == 201, r.text
    sent.append(r.json().get("command_uuid") or r.json()["uuid"])
    _wait(lambda: api.get("/api/v1/push-certificate").json()["state"] == "certificate_rejected", "state refused")
    requests_then = len(stack.apns.requests)
    r = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "DeviceInformation",
                                                               "params": {"Queries": ["OSVersion"]}})
    assert r.status_code == 201, r.text
    sent.append(r.json().get("command_uuid") or r.json()["uuid"])
    with stack.session() as s:
        _wait(lambda: (s.expire_all() or s.scalar(select(Device.last_push_error).where(Device.udid == sim.udid)))
              == "held:certificate_rejected", "second push held")
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.push_pending and device.push_failures == 0  # the iPad is not at fault
    assert len(stack.apns.requests) == requests_then  # nothing sent to Apple with a refused certificate
    state = api.get("/api/v1/push-certificate").json()
    assert state["reason"] == "BadCertificate" and state["pending_pushes"] == 1
    assert api.get(f"/api/v1/devices/{sim.udid}").json()["push"]["state"] == "certificate_refused"
    alerts = _events(stack, "push_certificate_rejected")
    assert len(alerts) == 1 and alerts[0].severity == "critical" and "Renew" in alerts[0].summary_vi

    # The console says it in Vietnamese (an auditor reads it; only IT administrators may install).
    subprocess.run([str(BIN / "ipad-mdm"), "user", "create", "--username", "kiemtra2", "--role", "auditor",
                    "--password-stdin"], input=PASSWORD + "\n", env=stack.env, capture_output=True, text=True)
    console = _console(stack, "kiemtra2")
    page = console.get("/console/push").text
    assert "Apple từ chối chứng thư số" in page and stack.topic in page and "BadCertificate" not in page
    assert console.post("/console/push/certificate", {}).status_code == 403
    console.close()

    # A renewal (same topic, new key) installed with the CLI: the worker uses it at its next push,
    # without a restart, and the held pushes go out.
    renewed_pem, renewed_key = stack.apple.push_cert(stack.topic, 365)
    (tmp_path / "renewed.pem").write_bytes(renewed_pem)
    (tmp_path / "renewed.key").write_bytes(renewed_key)
    out = json.loads(_cli(stack, "push-cert", "install", "--cert", str(tmp_path / "renewed.pem"), "--key",
                          str(tmp_path / "renewed.key"), "--json").stdout)
    assert out["topic_changed"] is False and out["pushes_resumed"] == 1 and "PRIVATE" not in json.dumps(out)
    assert oct((stack.instance_dir / "secrets" / "push.key").stat().st_mode & 0o777) == "0o600"
    _wait(lambda: api.get("/api/v1/push-certificate").json()["pending_pushes"] == 0, "held pushes sent")
    assert api.get("/api/v1/push-certificate").json()["state"] == "ok"
    handled = {c["Command"]["RequestType"] for c in sim.process_commands()}
    assert {"SecurityInfo", "DeviceInformation"} <= handled
    _assert_each_acknowledged_once(stack, sent)

    # A certificate created "new" (another topic): refused unless confirmed, nothing written.
    other_topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
    new_pem, new_key = stack.apple.push_cert(other_topic, 365)
    body = {"certificate_pem": new_pem.decode(), "private_key_pem": new_key.decode()}
    r = api.post("/api/v1/push-certificate", json=body)
    assert r.status_code == 409 and r.json()["code"] == "topic_change_unconfirmed", r.text
    assert r.json()["enrolled_topics"] == {stack.topic: 1} and "Renew" in r.json()["error"]
    subprocess.run([str(BIN / "ipad-mdm"), "user", "create", "--username", "quantri", "--role", "it_admin",
                    "--password-stdin"], input=PASSWORD + "\n", env=stack.env, capture_output=True, text=True,
                   check=True)
    console = _console(stack, "quantri")
    console.get("/console/push")
    page = console.post("/console/push/certificate", files={"certificate": ("new.pem", new_pem),
                                                            "private_key": ("new.key", new_key)})
    assert page.status_code == 409 and "đăng ký lại" in page.text and 'id="push-confirm-topic"' in page.text
    assert "Renew" in page.text and "topic_change_unconfirmed" not in page.text
    console.close()
    assert (stack.instance_dir / "ca" / "push.pem").read_bytes() == renewed_pem
    refused = _cli(stack, "push-cert", "install", "--cert", str(tmp_path / "renewed.pem"), "--key",
                   str(tmp_path / "renewed.key"), check=False)
    assert refused.returncode == 0  # the same topic is a renewal (installing it again is harmless)
    (tmp_path / "new.pem").write_bytes(new_pem)
    (tmp_path / "new.key").write_bytes(new_key)
    refused = _cli(stack, "push-cert", "install", "--cert", str(tmp_path / "new.pem"), "--key",
                   str(tmp_path / "new.key"), check=False)
    assert refused.returncode == 3 and "Renew" in refused.stderr and "Traceback" not in refused.stderr
    assert api.post("/api/v1/push-certificate", json={**body, "confirm_topic_change": "yes"}).status_code == 400
    r = api.post("/api/v1/push-certificate", json={**body, "confirm_topic_change": True})
    assert r.status_code == 201 and r.json()["devices_left_behind"] == 1, r.text
    assert len(_events(stack, "push_topic_changed")) == 1
    # APNs refuses the enrolled iPad's token under the new topic: detected and said.
    r = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "SecurityInfo"})
    assert r.status_code == 201
    _wait(lambda: api.get("/api/v1/push-certificate").json()["state"] == "topic_mismatch", "topic mismatch seen")
    assert len(_events(stack, "push_topic_mismatch")) == 1
    assert api.get("/api/v1/push-certificate").json()["enrolled_other_topic"] == 1

    web_log = (stack.tmp / "web.log").read_text() + (stack.tmp / "worker.log").read_text()
    assert " 500 " not in web_log and "Traceback" not in web_log
    assert "PRIVATE KEY" not in web_log
    inst.database.dispose()
    api.close()
    sim.close()


def _console(stack, username) -> ConsoleClient:
    class _Server:
        def http(self, **kw):
            return httpx.Client(base_url=stack.url, verify=stack.verify, timeout=60, **kw)

    client = ConsoleClient(_Server())
    assert client.login(username).status_code == 302
    return client


def test_readme_push_cert_block_runs_as_written(server, tmp_path):
    """The README's push-certificate lines through the real CLI on the server's own instance, with the
    files Apple's portal gives (here from the test CA) in the current folder."""
    import os
    import re
    import sys
    from pathlib import Path

    ca = AppleStandInCA()
    topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
    cert_pem, key_pem = ca.push_cert(topic, 365)
    (tmp_path / "MDM_Push.pem").write_bytes(cert_pem)
    (tmp_path / "mdm-push.key").write_bytes(key_pem)
    block = re.search(r"<!-- cli-push-cert -->\n```sh\n(.*?)\n```", (ROOT / "README.md").read_text(encoding="utf-8"),
                      re.S)
    assert block, "README lost its push-certificate block"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAD_MDM_") and k != "DATABASE_URL"}
    env.update(IPAD_MDM_INSTANCE=str(server.instance.settings.instance_dir),
               DATABASE_URL=server.instance.settings.database_url,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    outputs = []
    for line in [x for x in block.group(1).splitlines() if x.strip()]:
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (line, proc.stdout, proc.stderr)
        outputs.append(json.loads(proc.stdout))
    installed, shown = outputs
    assert installed["certificate"]["topic"] == topic and not installed["certificate"]["self_signed"]
    assert shown["certificate"]["topic"] == topic and shown["state"] == "ok"
    assert shown["certificate"]["days_left"] in (364, 365) and "BEGIN" not in json.dumps(outputs)
    # The running server names the new topic in the next enrollment profile, without a restart.
    sim = server.simulator()
    sim.install_enrollment_profile(sim.fetch_profile(server.enrollment_url()).content)
    assert sim.mdm_payload["Topic"] == topic
    sim.close()
