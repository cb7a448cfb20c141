"""Device identity lifecycle through real HTTPS: revocation + CRL, CertificateList check, renewal."""
from __future__ import annotations

import datetime as dt
import plistlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ipad_mdm.crypto import cms
from mdm.models import Device, IdentityCertificate


@pytest.fixture
def api(server):
    client = server.http(headers={"Authorization": f"Bearer {server.api_token('it_admin')}"})
    yield client
    client.close()


def _serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _fetch_crl(server, tmp_path, name="crl.der"):
    with server.http() as client:
        r = client.get("/scep/crl")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pkix-crl"
    path = tmp_path / name
    path.write_bytes(r.content)
    return r.content, path


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _detail(api, udid):
    r = api.get(f"/api/v1/devices/{udid}")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_crl_lists_revoked_identity_and_device_is_refused(server, enrolled, api, tmp_path):
    sim = enrolled
    der, path = _fetch_crl(server, tmp_path, "empty.der")
    empty = x509.load_der_x509_crl(der)
    assert len(list(empty)) == 0
    first_number = _crl_number(empty)
    # Cached: nothing was revoked, so the same signed bytes are served again.
    assert _fetch_crl(server, tmp_path, "again.der")[0] == der

    assert sim.connect("Idle").status_code == 200
    r = api.post(f"/api/v1/identities/{_serial_hex(sim.identity)}/revoke", json={"reason": "keyCompromise"})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True and r.json()["identity"]["revocation_reason"] == "keyCompromise"
    r = api.post(f"/api/v1/identities/{_serial_hex(sim.identity)}/revoke", json={"reason": "keyCompromise"})
    assert r.json()["changed"] is False  # the first revocation stands
    assert api.post("/api/v1/identities/abc/revoke", json={}).status_code == 404
    assert api.post(f"/api/v1/identities/{_serial_hex(sim.identity)}/revoke",
                    json={"reason": "because"}).status_code == 400

    der, path = _fetch_crl(server, tmp_path)
    crl = x509.load_der_x509_crl(der)
    assert crl.get_revoked_certificate_by_serial_number(sim.identity.serial_number) is not None
    assert _crl_number(crl) > first_number
    assert crl.is_signature_valid(server.instance.ca.certificate.public_key())
    out = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(path), "-CAfile", server.ca_path, "-noout"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "verify OK" in (out.stdout + out.stderr), out.stderr

    # The revoked identity no longer gets through /mdm/connect.
    r = sim.connect("Idle")
    assert r.status_code == 403 and "revoked" in r.json()["error"]

    # A check-out elsewhere revokes too; the CRL picks it up with a higher number.
    other = server.simulator()
    try:
        other.enroll(server.enrollment_url())
        assert other.checkout().status_code == 200
        crl2 = x509.load_der_x509_crl(_fetch_crl(server, tmp_path, "crl2.der")[0])
        assert _crl_number(crl2) > _crl_number(crl)
        assert crl2.get_revoked_certificate_by_serial_number(other.identity.serial_number) is not None
        assert crl2.get_revoked_certificate_by_serial_number(sim.identity.serial_number) is not None
    finally:
        other.close()


def _foreign_identity() -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipad-mdm-identity-999")])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))


def test_certificate_list_check_flags_foreign_identity(server, enrolled, api):
    sim = enrolled
    check = _detail(api, sim.udid)["certificates_check"]
    assert check["ok"] is True and check["findings"] == []

    foreign = _foreign_identity()
    original = sim._answer_CertificateList

    def with_foreign(command):
        answer = original(command)
        answer["CertificateList"].append({"CommonName": "ipad-mdm-identity-999", "IsIdentity": True,
                                          "Data": foreign.public_bytes(serialization.Encoding.DER)})
        return answer

    sim._answer_CertificateList = with_foreign
    r = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "CertificateList"})
    assert r.status_code == 201
    server.wait_pushes()
    sim.process_commands()
    check = _detail(api, sim.udid)["certificates_check"]
    assert check["ok"] is False
    (finding,) = check["findings"]
    assert finding["kind"] == "foreign_identity" and finding["detail"] == "not issued by this server"
    assert finding["sha256"] == foreign.fingerprint(hashes.SHA256()).hex()

    # The device reporting only someone else's identity: ours is missing too.
    sim._answer_CertificateList = lambda command: {"CertificateList": [
        {"CommonName": "x", "IsIdentity": True, "Data": foreign.public_bytes(serialization.Encoding.DER)}]}
    api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "CertificateList"})
    server.wait_pushes()
    sim.process_commands()
    kinds = {f["kind"] for f in _detail(api, sim.udid)["certificates_check"]["findings"]}
    assert kinds == {"foreign_identity", "missing_identity"}


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_identity_renewal_reissues_enrollment_profile(server, enrolled, api, tmp_path):
    from mdm.identity.jobs import renew_identities

    sim = enrolled
    old_identity = sim.identity
    # Nothing is due yet.
    renew_identities(server.runtime)
    assert _detail(api, sim.udid)["identity_lifecycle"]["last_renewal"] is None

    # Make the stored identity expire within identity_renew_days (30).
    with server.session() as s:
        row = s.scalar(select(IdentityCertificate).where(IdentityCertificate.serial == _serial_hex(old_identity)))
        row.not_after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10)
    assert _detail(api, sim.udid)["identity_lifecycle"]["renewal_due"] is True

    renew_identities(server.runtime)
    renew_identities(server.runtime)  # idempotent while one is under way
    server.wait_pushes()
    handled = sim.process_commands()
    assert [c["Command"]["RequestType"] for c in handled] == ["InstallProfile"]
    assert _detail(api, sim.udid)["identity_lifecycle"]["last_renewal"]["status"] == "acknowledged"

    # A re-issued enrollment profile: same identifier / server / topic, new SCEP challenge.
    signed = handled[0]["Command"]["Payload"]
    (tmp_path / "renew.der").write_bytes(signed)
    out = subprocess.run(["openssl", "cms", "-verify", "-CAfile", server.ca_path, "-inform", "DER",
                          "-in", str(tmp_path / "renew.der"), "-out", str(tmp_path / "renew.plist")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    profile = plistlib.loads(cms.verify(signed).content)
    assert profile["PayloadIdentifier"] == sim.profile["PayloadIdentifier"]
    by_type = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    assert by_type["com.apple.mdm"]["ServerURL"] == sim.mdm_payload["ServerURL"]
    assert by_type["com.apple.mdm"]["Topic"] == sim.mdm_payload["Topic"]
    assert by_type["com.apple.mdm"]["IdentityCertificateUUID"] == by_type["com.apple.security.scep"]["PayloadUUID"]
    new_scep = by_type["com.apple.security.scep"]["PayloadContent"]
    assert new_scep["Challenge"] != sim.scep_payload["Challenge"]

    # The simulator stores the profile but does not run SCEP on InstallProfile;
    # do what iOS does while installing it: enroll with the new SCEP payload.
    sim.scep_payload = new_scep
    sim.mdm_payload = by_type["com.apple.mdm"]
    new_identity = sim.scep_enroll()
    new_key = sim.key
    assert new_identity.serial_number != old_identity.serial_number
    # The challenge is single use (scep_enroll makes a new key: restore ours after).
    from tests.sim_scep import SCEPFailure
    with pytest.raises(SCEPFailure):
        sim.scep_enroll()
    sim.key, sim.identity = new_key, new_identity

    # The new identity is already bound to the device: /mdm/connect accepts it.
    r = sim.connect("Idle")
    assert r.status_code == 200, r.text
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        new_row = s.scalar(select(IdentityCertificate).where(IdentityCertificate.serial == _serial_hex(new_identity)))
        assert new_row.device_id == device.id
    # First use of the new identity completes the renewal and retires the old identity at once.
    assert _detail(api, sim.udid)["identity_lifecycle"]["last_renewal"]["status"] == "completed"
    old_row = {c["serial"]: c for c in _detail(api, sim.udid)["certificates"]}[_serial_hex(old_identity)]
    assert old_row["revocation_reason"] == "superseded"

    # The next CertificateList shows only the new identity: nothing is wrong.
    api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "CertificateList"})
    server.wait_pushes()
    sim.process_commands()
    detail = _detail(api, sim.udid)
    assert detail["certificates_check"]["ok"] is True
    by_serial = {c["serial"]: c for c in detail["certificates"]}
    assert by_serial[_serial_hex(old_identity)]["revocation_reason"] == "superseded"
    assert by_serial[_serial_hex(new_identity)]["revoked_at"] is None
    assert detail["identity_lifecycle"]["renewal_due"] is False
