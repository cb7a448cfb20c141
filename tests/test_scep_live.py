"""The real SCEP client (micromdm's scepclient, Debian package `scep`) against the live server."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from cryptography import x509
from sqlalchemy import select

from mdm.models import EnrollmentToken, IdentityCertificate
from tests.conftest import start_live_server

SCEPCLIENT = shutil.which("scepclient") or "/usr/bin/scepclient"


@pytest.fixture
def plain_server(tmp_path, database_url):
    # SCEP runs over plain HTTP by design (its messages are signed and encrypted);
    # scepclient does not take a custom CA bundle, so this server has no TLS.
    srv = start_live_server(tmp_path, database_url, tls=False)
    try:
        yield srv
    finally:
        srv.stop()


def _challenge(server) -> str:
    # Apple requires https:// in the MDM payload, so this plain-HTTP server
    # cannot serve an enrollment profile (it says so with a 503)...
    url = server.enrollment_url()
    with server.http() as http:
        r = http.get(url)
    assert r.status_code == 503 and "https" in r.json()["error"]
    # ...and the token is still unused; redeem it the way the profile download does.
    from mdm import enrollment

    with server.session() as s:
        _token, challenge = enrollment.redeem_token(s, url.split("token=")[1])
    return challenge


def _run(server, workdir, challenge):
    workdir.mkdir()
    return subprocess.run(
        [SCEPCLIENT, "-server-url", f"{server.url}/scep", "-private-key", str(workdir / "key.pem"),
         "-challenge", challenge, "-cn", "ipad-scepclient", "-organization", "VPCP"],
        capture_output=True, text=True, timeout=120,
    )


def test_scepclient_enrolls_against_the_server(plain_server, tmp_path):
    challenge = _challenge(plain_server)

    wrong = _run(plain_server, tmp_path / "wrong", "not-the-challenge")
    assert wrong.returncode != 0 and "badRequest" in wrong.stdout + wrong.stderr

    good = _run(plain_server, tmp_path / "good", challenge)
    assert good.returncode == 0, good.stdout + good.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "good" / "client.pem").read_bytes())
    assert plain_server.instance.ca.issued_this(cert)
    # The server decides the subject, not the client.
    assert cert.subject.rfc4514_string().startswith("CN=ipad-mdm-identity-")

    again = _run(plain_server, tmp_path / "again", challenge)
    assert again.returncode != 0 and "badRequest" in again.stdout + again.stderr

    with plain_server.session() as s:
        rows = list(s.scalars(select(IdentityCertificate)))
        assert [int(r.serial, 16) for r in rows] == [cert.serial_number]
        token = s.scalar(select(EnrollmentToken))
        assert token.challenge_used_at is not None


def test_renewal_request_signed_by_current_identity(server):
    """RenewalReq: signed with the device's current identity, answered with a new one bound to the same device."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests import sim_scep

    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert sim.scep_recipient != sim.ca_cert  # GetCACert named the RA: the enrollment's request went to it
    # A renewal encrypted to the CA itself (a client that kept only the CA certificate) is opened too;
    # every answer is signed by the RA.
    message, _tid, _signer = sim_scep.build_pkcs_req(
        sim.ca_cert, new_key, sim.identity.subject, None, message_type="17", signer=(sim.identity, sim.key))
    with server.http() as http:
        r = http.post("/scep", params={"operation": "PKIOperation"}, content=message)
    assert r.status_code == 200
    renewed = sim_scep.parse_cert_rep(r.content, sim.scep_recipient, sim.key, sim.identity,
                                      csr_key=new_key.public_key())
    assert renewed.serial_number != sim.identity.serial_number
    with server.session() as s:
        rows = {int(c.serial, 16): c for c in s.scalars(select(IdentityCertificate))}
        assert rows[renewed.serial_number].device_id == rows[sim.identity.serial_number].device_id is not None

    # A renewal signed by a certificate that is not a current identity of ours is refused.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    self_signed = sim_scep.self_signed_cert(stranger, sim.identity.subject)
    message, _tid, _ = sim_scep.build_pkcs_req(sim.scep_recipient, new_key, sim.identity.subject, None,
                                               message_type="17", signer=(self_signed, stranger))
    with server.http() as http:
        r = http.post("/scep", params={"operation": "PKIOperation"}, content=message)
    assert r.status_code == 200
    with pytest.raises(sim_scep.SCEPFailure):
        sim_scep.parse_cert_rep(r.content, sim.scep_recipient, stranger, self_signed)
    sim.close()


def test_an_enrollment_uses_the_ca_key_once(server, monkeypatch):
    """The CA key (maybe on a slow USB token) signs the identity certificate and nothing else: the
    SCEP request is opened and the answer signed by the registration authority GetCACert names."""
    from ipad_mdm.crypto import ca as ca_module
    from ipad_mdm.crypto.keys import FileKey

    ca_key, ra = server.instance.ca.key, server.instance.scep_ra
    assert isinstance(ra.key, FileKey) and server.instance.ca.issued_this(ra.certificate)
    used: list[str] = []
    real_certificate = ca_module.sign_certificate

    def certificate(builder, key):  # a file key signs certificates directly, a token key through .sign
        if key is ca_key:
            used.append("certificate")
        return real_certificate(builder, key)

    monkeypatch.setattr(ca_module, "sign_certificate", certificate)
    for method in ("sign", "decrypt"):
        real = getattr(type(ca_key), method)

        def counted(self, *args, _real=real, _name=method, **kw):
            if self is ca_key:
                used.append(_name)
            return _real(self, *args, **kw)

        monkeypatch.setattr(type(ca_key), method, counted)
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    assert sim.identity is not None and server.instance.ca.issued_this(sim.identity)
    assert sim.scep_recipient == ra.certificate
    assert used == ["certificate"]  # the identity certificate; the RA's key decrypted and signed the rest
    sim.close()


def test_scepclient_renewal_against_the_live_server(plain_server, tmp_path):
    """scepclient's RenewalReq (it signs with the client.pem it already holds) against the real
    server: renewed once the identity belongs to a device, refused while that renewal is unused."""
    import base64
    import plistlib
    import uuid

    from cryptography.hazmat.primitives import serialization

    from ipad_mdm.crypto import cms
    from ipad_mdm.crypto.keys import FileKey

    challenge = _challenge(plain_server)
    work = tmp_path / "device"
    first = _run(plain_server, work, challenge)
    assert first.returncode == 0, first.stdout + first.stderr
    identity = x509.load_pem_x509_certificate((work / "client.pem").read_bytes())
    key = serialization.load_pem_private_key((work / "key.pem").read_bytes(), None)

    def renew():
        return subprocess.run([SCEPCLIENT, "-server-url", f"{plain_server.url}/scep", "-private-key",
                               str(work / "key.pem"), "-cn", "ipad-scepclient", "-organization", "VPCP"],
                              capture_output=True, text=True, timeout=120)

    # Not bound to any device yet: a renewal has nothing to renew.
    refused = renew()
    assert refused.returncode != 0 and "badRequest" in refused.stdout + refused.stderr

    # The identity authenticates as an iPad (signed check-in), and is bound to it.
    udid = str(uuid.uuid4()).upper()
    body = plistlib.dumps({"MessageType": "Authenticate", "Topic": plain_server.instance.push_topic, "UDID": udid,
                           "SerialNumber": "DMPSCEPCLI01"})
    sig = base64.b64encode(cms.sign(body, identity, FileKey(key), detached=True)).decode()
    with plain_server.http() as http:
        assert http.put("/mdm/checkin", content=body, headers={"Mdm-Signature": sig}).status_code == 200

    renewed = renew()
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    new_cert = x509.load_pem_x509_certificate((work / "client.pem").read_bytes())
    assert new_cert.serial_number != identity.serial_number
    with plain_server.session() as s:
        rows = {int(c.serial, 16): c for c in s.scalars(select(IdentityCertificate))}
        assert rows[new_cert.serial_number].device_id == rows[identity.serial_number].device_id is not None
    # A second renewal signed by the old identity while the new one is unused: refused.
    (work / "client.pem").write_bytes(identity.public_bytes(serialization.Encoding.PEM))
    again = renew()
    assert again.returncode != 0 and "badRequest" in again.stdout + again.stderr
