"""APNs client against a real HTTP/2 stand-in (TLS with client certificates, and h2c)."""
from __future__ import annotations

import json
import logging
import ssl
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.apns_standin import start_apns_standin  # noqa: E402
from ipad_mdm.crypto.ca import CertificateAuthority, create_ca  # noqa: E402
from ipad_mdm.crypto.keys import FileKey  # noqa: E402
from mdm.apns import APNsClient, PushCredentials, PushResult  # noqa: E402

TOPIC = f"com.apple.mgmt.External.{uuid.uuid4()}"
TOKEN = "ab" * 32
MAGIC = str(uuid.uuid4()).upper()


def _write_pem(path: Path, obj) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


def _push_cert(ca: CertificateAuthority, topic: str, tmp: Path, name: str) -> tuple[Path, Path]:
    """A client certificate shaped like Apple's MDM push certificate (UID = topic)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, topic),
            x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{uuid.uuid4()}"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        ]
    )
    cert = ca.issue_device_identity(subject, key.public_key(), days=30)
    return _write_pem(tmp / f"{name}.pem", cert), _write_pem(tmp / f"{name}.key", key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apns-pki")
    ca_cert, ca_key = create_ca("Test APNs Root", "Test Org", key_size=2048)
    ca = CertificateAuthority(ca_cert, FileKey(ca_key))
    server_cert, server_key = ca.issue_server(["127.0.0.1", "localhost"], days=2)
    push_cert, push_key = _push_cert(ca, TOPIC, tmp, "push")

    rogue_cert, rogue_key = create_ca("Rogue Root", "Nobody", key_size=2048)
    rogue_push = _push_cert(CertificateAuthority(rogue_cert, FileKey(rogue_key)), TOPIC, tmp, "rogue")
    return {
        "ca": ca,
        "ca_pem": ca.certificate_pem,
        "ca_path": str(_write_pem(tmp / "ca.pem", ca_cert)),
        "server_cert": server_cert,
        "server_key": server_key,
        "creds": PushCredentials.from_files(push_cert, push_key),
        "rogue_creds": PushCredentials.from_files(*rogue_push),
        "tmp": tmp,
    }


@pytest.fixture
def standin(pki):
    with start_apns_standin(
        tls=True,
        expected_topic=TOPIC,
        client_ca_pem=pki["ca_pem"],
        server_cert=pki["server_cert"],
        server_key=pki["server_key"],
    ) as s:
        yield s


class FakeSleep:
    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _client(pki, standin, **kw) -> APNsClient:
    kw.setdefault("sleep", FakeSleep())
    kw.setdefault("timeout", 5.0)
    creds = kw.pop("creds", pki["creds"])
    return APNsClient(standin.url, creds, verify=pki["ca_path"], **kw)


# -- credentials and validation ---------------------------------------------


def test_credentials_topic_from_uid(pki):
    assert pki["creds"].topic == TOPIC
    assert "PRIVATE KEY" not in repr(pki["creds"])


def test_credentials_reject_cert_without_uid_and_mismatched_key(pki):
    tmp = pki["tmp"]
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, ca_key = create_ca("Other", "Org", key_size=2048)
    ca = CertificateAuthority(ca_cert, FileKey(ca_key))
    cert = ca.issue_device_identity(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]), key.public_key(), 1)
    with pytest.raises(ValueError, match="UID"):
        PushCredentials.from_files(_write_pem(tmp / "nouid.pem", cert), _write_pem(tmp / "nouid.key", key))
    with pytest.raises(ValueError, match="does not match"):
        PushCredentials.from_files(pki["creds"].cert_path, tmp / "nouid.key")


@pytest.mark.parametrize("token", ["", "ab" * 31, "zz" * 32, "a" * 65, "ab" * 101, "ab" * 32 + " "])
def test_bad_token_raises_value_error(pki, standin, token):
    with _client(pki, standin) as client:
        with pytest.raises(ValueError):
            client.push(token, MAGIC)
    assert standin.requests == []


# -- happy path ---------------------------------------------------------------


def test_push_arrives_over_http2_with_apns_headers(pki, standin):
    with _client(pki, standin) as client:
        result = client.push(TOKEN.upper(), MAGIC)
    assert result == PushResult(
        ok=True, status_code=200, apns_id=result.apns_id, reason=None, attempts=1,
        permanent_failure=False, token_unregistered=False,
    )
    assert uuid.UUID(result.apns_id)
    (push,) = standin.wait_for(1, timeout=5)
    assert push.http_version == "2"
    assert (push.token, push.topic, push.magic) == (TOKEN, TOPIC, MAGIC)
    assert push.headers["apns-push-type"] == "mdm"
    assert push.headers["apns-priority"] == "10"
    assert abs(int(push.headers["apns-expiration"]) - (time.time() + 86400)) < 120
    (request,) = standin.requests
    assert request.method == "POST" and request.path == f"/3/device/{TOKEN}"
    assert json.loads(request.body) == {"mdm": MAGIC}


def test_push_over_h2c_prior_knowledge(pki):
    with start_apns_standin(tls=False, expected_topic=TOPIC) as s:
        assert s.url.startswith("http://127.0.0.1:")
        with APNsClient(s.url, pki["creds"], sleep=FakeSleep()) as client:
            assert client.push(TOKEN, MAGIC).ok
        (push,) = s.wait_for(1)
        assert push.http_version == "2" and push.magic == MAGIC


def test_push_many_reuses_one_connection(pki, standin):
    tokens = [f"{i:02x}" * 32 for i in range(6)]
    items = [(t, f"magic-{i}") for i, t in enumerate(tokens)] + [("not-hex", "m")]
    with _client(pki, standin) as client:
        results = client.push_many(items[:3]) + client.push_many(items[3:], max_workers=3)
    assert [r.ok for r in results] == [True] * 6 + [False]
    assert results[-1].reason == "BadDeviceToken" and results[-1].attempts == 0
    pushes = standin.wait_for(6)
    assert sorted(p.token for p in pushes) == sorted(tokens)
    assert len({p.client for p in pushes}) == 1  # same source port: one TCP/HTTP-2 connection


# -- APNs errors and retries ---------------------------------------------------


def test_wrong_topic_gets_400_bad_topic_without_retry(pki, standin):
    # Trusted by the stand-in, but the push certificate of another MDM server.
    other = PushCredentials.from_files(*_push_cert(pki["ca"], "com.apple.mgmt.External.other", pki["tmp"], "other"))
    sleep = FakeSleep()
    with _client(pki, standin, creds=other, sleep=sleep) as client:
        assert client.topic == "com.apple.mgmt.External.other"
        result = client.push(TOKEN, MAGIC)
    assert (result.ok, result.status_code, result.reason) == (False, 400, "BadTopic")
    assert result.permanent_failure and not result.token_unregistered
    assert result.attempts == 1 and sleep.calls == []
    assert standin.pushes == []


def test_503_twice_then_success(pki, standin):
    standin.fail_next(2, 503)
    sleep = FakeSleep()
    with _client(pki, standin, sleep=sleep, backoff_base=0.5) as client:
        result = client.push(TOKEN, MAGIC)
    assert result.ok and result.status_code == 200 and result.attempts == 3
    assert [r.status for r in standin.requests] == [503, 503, 200]
    # Exponential with jitter: attempt n waits in [base*2^(n-1)/2, base*2^(n-1)].
    assert len(sleep.calls) == 2
    assert 0.25 <= sleep.calls[0] <= 0.5 and 0.5 <= sleep.calls[1] <= 1.0
    assert len(standin.wait_for(1)) == 1


@pytest.mark.parametrize("status", [429, 500])
def test_other_retryable_statuses(pki, standin, status):
    standin.fail_next(1, status)
    with _client(pki, standin) as client:
        result = client.push(TOKEN, MAGIC)
    assert result.ok and result.attempts == 2


def test_410_marks_token_unregistered_without_retry(pki, standin):
    standin.fail_next(1, 410)
    sleep = FakeSleep()
    with _client(pki, standin, sleep=sleep) as client:
        result = client.push(TOKEN, MAGIC)
    assert (result.ok, result.status_code, result.reason) == (False, 410, "Unregistered")
    assert result.token_unregistered and result.permanent_failure
    assert isinstance(result.timestamp, int)
    assert result.attempts == 1 and sleep.calls == [] and len(standin.requests) == 1


@pytest.mark.parametrize("status,reason", [(400, "BadDeviceToken"), (403, "BadCertificate")])
def test_permanent_errors_are_not_retried(pki, standin, status, reason):
    standin.fail_next(1, status)
    with _client(pki, standin) as client:
        result = client.push(TOKEN, MAGIC)
    assert (result.ok, result.status_code, result.reason, result.attempts) == (False, status, reason, 1)
    assert result.permanent_failure and not result.token_unregistered


def test_exhausted_retries_return_failure(pki, standin):
    standin.fail_next(3, 503)
    with _client(pki, standin, max_attempts=3) as client:
        result = client.push(TOKEN, MAGIC)
    assert (result.ok, result.status_code, result.attempts) == (False, 503, 3)
    assert not result.permanent_failure


def test_hang_times_out_and_is_retried(pki, standin):
    standin.hang_next(1)
    sleep = FakeSleep()
    with _client(pki, standin, timeout=0.5, sleep=sleep) as client:
        result = client.push(TOKEN, MAGIC)
    assert result.ok and result.attempts == 2 and len(sleep.calls) == 1
    assert len(standin.wait_for(1)) == 1


def test_hang_until_max_attempts_fails_without_raising(pki, standin):
    standin.hang_next(3)
    sleep = FakeSleep()
    with _client(pki, standin, timeout=0.3, max_attempts=3, sleep=sleep) as client:
        result = client.push(TOKEN, MAGIC)
    # Each attempt timed out and was retried after a backoff: three attempts, two waits between.
    assert (result.ok, result.status_code, result.attempts) == (False, None, 3)
    assert len(sleep.calls) == 2
    assert result.reason == "ReadTimeout" and not result.permanent_failure
    assert standin.pushes == []


def test_connection_refused_is_retried_then_reported(pki):
    with start_apns_standin(tls=False) as s:
        url = s.url
    sleep = FakeSleep()
    with APNsClient(url, pki["creds"], max_attempts=2, sleep=sleep) as client:
        result = client.push(TOKEN, MAGIC)
    assert (result.ok, result.reason, result.attempts) == (False, "ConnectError", 2)
    assert len(sleep.calls) == 1


# -- mutual TLS ----------------------------------------------------------------


def test_standin_rejects_client_without_certificate(pki, standin):
    ctx = ssl.create_default_context(cafile=pki["ca_path"])  # trusts the server, offers no certificate
    with httpx.Client(http2=True, verify=ctx, trust_env=False) as plain:
        with pytest.raises(httpx.TransportError):
            plain.post(f"{standin.url}/3/device/{TOKEN}", json={"mdm": MAGIC}, headers={"apns-topic": TOPIC})
    assert standin.pushes == []


def test_untrusted_push_certificate_is_refused(pki, standin):
    # Under TLS 1.3 the server's rejection reaches the client only as an EOF on
    # its first write, indistinguishable from a dropped connection; so the
    # client retries like any network error and then reports failure.
    sleep = FakeSleep()
    with _client(pki, standin, creds=pki["rogue_creds"], sleep=sleep, max_attempts=2) as client:
        result = client.push(TOKEN, MAGIC)
    assert (result.ok, result.status_code, result.attempts) == (False, None, 2)
    assert result.reason in {"WriteError", "ReadError", "RemoteProtocolError", "ConnectError"}
    assert standin.pushes == [] and standin.requests == []


def test_untrusted_server_fails_permanently(pki):
    with start_apns_standin(tls=True, expected_topic=TOPIC) as s:  # its own throwaway CA
        with _client(pki, s) as client:  # trusts only our test CA
            result = client.push(TOKEN, MAGIC)
    assert not result.ok and result.permanent_failure and "CERTIFICATE_VERIFY_FAILED" in result.reason


def test_push_magic_and_key_never_logged(pki, standin, caplog):
    caplog.set_level(logging.DEBUG)
    standin.fail_next(1, 503)
    with _client(pki, standin) as client:
        assert client.push(TOKEN, MAGIC).ok
    text = caplog.text
    assert MAGIC not in text and TOKEN not in text and "PRIVATE KEY" not in text
    assert TOKEN[:8] in text


def test_local_standin_is_verified_like_apple(pki):
    """No exception for loopback: without the stand-in's CA the push fails on verification; with
    it (IPAD_MDM_APNS_CA) the push goes through."""
    with start_apns_standin(tls=True, expected_topic=TOPIC) as s:
        with APNsClient(s.url, pki["creds"], verify=True, sleep=FakeSleep(), timeout=5.0, max_attempts=1) as client:
            result = client.push(TOKEN, MAGIC)
        assert not result.ok and "CERTIFICATE_VERIFY_FAILED" in result.reason and s.pushes == []
        with APNsClient(s.url, pki["creds"], verify=s.server_ca_path, sleep=FakeSleep(), timeout=5.0) as client:
            assert client.push(TOKEN, MAGIC).ok
        assert s.pushes[0].magic == MAGIC
