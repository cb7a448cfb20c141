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
