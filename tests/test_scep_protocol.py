"""SCEP protocol (mdm.scep) against the simulator client, OpenSSL and micromdm's scepclient."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # the project is not installed into the venv
    sys.path.insert(0, _ROOT)

from asn1crypto import cms as acms  # noqa: E402
from asn1crypto import core  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ipad_mdm.crypto import cms  # noqa: E402
from ipad_mdm.crypto.ca import CertificateAuthority, create_ca  # noqa: E402
from ipad_mdm.crypto.keys import FileKey  # noqa: E402
from mdm import scep  # noqa: E402
from tests import sim_scep  # noqa: E402

SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipad-0001")])
OPENSSL = shutil.which("openssl")
SCEPCLIENT = shutil.which("scepclient") or "/usr/bin/scepclient"  # Debian package scep (installed by .ci/run)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture(scope="module")
def ca():
    cert, key = create_ca("SCEP Test CA", "Test School", key_size=2048)
    return CertificateAuthority(cert, FileKey(key))


@pytest.fixture(scope="module")
def other_ca():
    cert, key = create_ca("Someone Else", "Elsewhere", key_size=2048)
    return CertificateAuthority(cert, FileKey(key))


@pytest.fixture(scope="module")
def device_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def valid_request(ca, device_key):
    der, tid, self_signed = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, "s3cret")
    return der


def _sign_outer(envelope: bytes, signer_cert, signer_key, message_type: str = "19") -> bytes:
    """Wrap an envelope in a pkiMessage the way a client does."""
    attrs = [
        {"type": sim_scep.MESSAGE_TYPE, "values": [core.PrintableString(message_type)]},
        {"type": sim_scep.TRANSACTION_ID, "values": [core.PrintableString("tx-1")]},
        {"type": sim_scep.SENDER_NONCE, "values": [core.OctetString(os.urandom(16))]},
    ]
    return cms.sign(envelope, signer_cert, FileKey(signer_key), signed_attrs_extra=attrs)


def _envelope_alg(cert_rep: bytes) -> str:
    env = acms.ContentInfo.load(cms.verify(cert_rep).content)["content"]
    return env["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native


# --------------------------------------------------------------------------- capabilities, GetCACert


def test_ca_caps_advertise_required_capabilities():
    caps = scep.CA_CAPS.splitlines()
    for cap in ("AES", "SHA-256", "POSTPKIOperation", "SCEPStandard", "Renewal"):
        assert cap in caps


def test_get_ca_cert_single_and_chain(ca, other_ca):
    body, ctype = scep.get_ca_cert_response(ca)
    assert ctype == "application/x-x509-ca-cert"
    assert x509.load_der_x509_certificate(body) == ca.certificate

    body, ctype = scep.get_ca_cert_response(ca, chain=[other_ca.certificate])
    assert ctype == "application/x-x509-ca-ra-cert"
    certs = acms.ContentInfo.load(body)["content"]["certificates"]
    # certificates is a DER SET OF, so order is not kept; clients pick by key usage.
    got = {x509.load_der_x509_certificate(c.chosen.dump()) for c in certs}
    assert got == {ca.certificate, other_ca.certificate}


def test_decode_get_message_tolerates_client_variants(valid_request):
    import base64

    std = base64.b64encode(valid_request).decode()
    assert scep.decode_get_message(std) == valid_request
    assert scep.decode_get_message(base64.urlsafe_b64encode(valid_request).decode()) == valid_request
    assert scep.decode_get_message(std.replace("+", " ").rstrip("=")) == valid_request
    with pytest.raises(scep.SCEPError):
        scep.decode_get_message("not*base64!")
    with pytest.raises(scep.SCEPError):
        scep.decode_get_message("")


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "cipher, request_alg, reply_alg",
    [("aes256", "aes256_cbc", "aes256_cbc"), ("aes128", "aes128_cbc", "aes256_cbc"), ("3des", "tripledes_3key", "tripledes_3key")],
)
def test_pkcs_req_round_trip(ca, device_key, cipher, request_alg, reply_alg):
    der, tid, self_signed = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, "s3cret", cipher=cipher)
    req = scep.parse_pki_message(der, ca)
    assert req.message_type == "PKCSReq"
    assert req.transaction_id == tid
    assert len(req.sender_nonce) == 16
    assert req.challenge == "s3cret"
    assert req.content_encryption_alg == request_alg
    assert req.signer_cert == self_signed
    assert req.signer_issued_by_ca is False
    assert req.csr.subject == SUBJECT
    assert req.csr.public_key().public_numbers() == device_key.public_key().public_numbers()

    issued = ca.issue_device_identity(req.csr.subject, req.csr.public_key(), 30)
    rep = scep.build_cert_rep(req, ca, issued)
    assert _envelope_alg(rep) == reply_alg
    assert sim_scep.parse_cert_rep(rep, ca.certificate, device_key, self_signed, request=der) == issued


def test_renewal_req_signed_by_issued_identity(ca, device_key):
    issued = ca.issue_device_identity(SUBJECT, device_key.public_key(), 30)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der, _, signer = sim_scep.build_pkcs_req(
        ca.certificate, new_key, SUBJECT, None, message_type="17", signer=(issued, device_key)
    )
    req = scep.parse_pki_message(der, ca)
    assert req.message_type == "RenewalReq"
    assert req.challenge is None
    assert req.signer_cert == issued and req.signer_issued_by_ca is True
    renewed = ca.issue_device_identity(req.csr.subject, req.csr.public_key(), 30)
    # The reply is encrypted to the *signer* (the old identity), as RFC 8894 requires.
    rep = scep.build_cert_rep(req, ca, renewed)
    got = sim_scep.parse_cert_rep(rep, ca.certificate, device_key, issued, request=der, csr_key=new_key.public_key())
    assert got == renewed


def test_csr_without_challenge(ca, device_key):
    der, _, _ = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, None)
    assert scep.parse_pki_message(der, ca).challenge is None


def test_failure_is_parsed_by_client_as_failure(ca, device_key):
    der, _, self_signed = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, "wrong")
    req = scep.parse_pki_message(der, ca)
    for info in scep.FAIL_INFO:
        with pytest.raises(sim_scep.SCEPFailure) as exc:
            sim_scep.parse_cert_rep(scep.build_failure(req, ca, info), ca.certificate, device_key, self_signed, request=der)
        assert exc.value.status == "FAILURE" and exc.value.fail_info == info
    with pytest.raises(ValueError):
        scep.build_failure(req, ca, "noSuchReason")


# --------------------------------------------------------------------------- rejections


def test_wrong_ca_encryption_is_rejected_but_answerable(ca, other_ca, device_key):
    der, tid, self_signed = sim_scep.build_pkcs_req(other_ca.certificate, device_key, SUBJECT, "s3cret")
    with pytest.raises(scep.SCEPError) as exc:
        scep.parse_pki_message(der, ca)
    assert exc.value.fail_info == "badCertId"
    # The outer signature was fine, so the caller can still send a signed FAILURE.
    assert exc.value.header is not None and exc.value.header.transaction_id == tid
    fail = scep.build_failure(exc.value.header, ca, exc.value.fail_info)
    with pytest.raises(sim_scep.SCEPFailure, match="badCertId"):
        sim_scep.parse_cert_rep(fail, ca.certificate, device_key, self_signed, request=der)


def test_envelope_for_ca_but_wrong_key_gives_uniform_error(ca, other_ca, device_key):
    # Addressed to our CA's issuer/serial but encrypted with another RSA key: the
    # key transport fails, and must look exactly like a CBC padding failure.
    csr = x509.CertificateSigningRequestBuilder().subject_name(SUBJECT).sign(device_key, hashes.SHA256())
    forged_recipient = _cert_with_key_of(ca.certificate, other_ca)
    env = sim_scep.encrypt_envelope(csr.public_bytes(serialization.Encoding.DER), forged_recipient)
    der = _sign_outer(env, sim_scep.self_signed_cert(device_key, SUBJECT), device_key)
    with pytest.raises(scep.SCEPError) as exc:
        scep.parse_pki_message(der, ca)
    # A random stand-in key yields valid CBC padding about 1 time in 256; the
    # garbage then fails as a CSR instead. Either way nothing tells RSA apart.
    assert "cannot decrypt pkcsPKIEnvelope" in str(exc.value) or "PKCS#10" in str(exc.value)
    assert exc.value.header is not None


def _cert_with_key_of(template: x509.Certificate, other: CertificateAuthority) -> x509.Certificate:
    """Same issuer and serial as `template`, but another CA's public key."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(template.issuer)
        .public_key(other.key.public_key())
        .serial_number(template.serial_number)
        .not_valid_before(template.not_valid_before_utc)
        .not_valid_after(template.not_valid_after_utc)
    )
    return builder.sign(other.key.private_key, hashes.SHA256())


def test_tampered_signature_is_rejected(ca, valid_request):
    tampered = bytearray(valid_request)
    tampered[-10] ^= 0x01  # the SignerInfo signature is the last field of the message
    with pytest.raises(scep.SCEPError) as exc:
        scep.parse_pki_message(bytes(tampered), ca)
    assert exc.value.fail_info == "badMessageCheck" and exc.value.header is None


def test_tampered_content_is_rejected(ca, valid_request):
    signed = cms.verify(valid_request)
    idx = valid_request.index(signed.content) + len(signed.content) - 20
    tampered = bytearray(valid_request)
    tampered[idx] ^= 0x80
    with pytest.raises(scep.SCEPError, match="digest"):
        scep.parse_pki_message(bytes(tampered), ca)


def test_bad_csr_signature_is_rejected(ca, device_key):
    csr = x509.CertificateSigningRequestBuilder().subject_name(SUBJECT).sign(device_key, hashes.SHA256())
    raw = bytearray(csr.public_bytes(serialization.Encoding.DER))
    raw[-3] ^= 0x01
    env = sim_scep.encrypt_envelope(bytes(raw), ca.certificate)
    der = _sign_outer(env, sim_scep.self_signed_cert(device_key, SUBJECT), device_key)
    with pytest.raises(scep.SCEPError, match="PKCS#10") as exc:
        scep.parse_pki_message(der, ca)
    assert exc.value.fail_info == "badMessageCheck" and exc.value.header is not None


def test_unsupported_message_type_is_answerable(ca, device_key):
    der, _, _ = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, "x", message_type="21")
    with pytest.raises(scep.SCEPError, match="GetCert") as exc:
        scep.parse_pki_message(der, ca)
    assert exc.value.fail_info == "badRequest" and exc.value.header.message_type == "GetCert"


@pytest.mark.parametrize(
    "junk",
    [b"", b"\x00", b"0", b"\x30\x80", b"\x30\x03\x02\x01\x00", os.urandom(512), b"A" * 1000, "a string", None],
)
def test_garbage_is_rejected(ca, junk):
    with pytest.raises(scep.SCEPError):
        scep.parse_pki_message(junk, ca)


def test_oversized_message_is_rejected_before_parsing(ca):
    with pytest.raises(scep.SCEPError, match="larger than"):
        scep.parse_pki_message(b"\x30" + b"\x00" * (scep.MAX_MESSAGE_BYTES + 1), ca)


def test_message_that_is_not_a_scep_request(ca, device_key):
    # A valid SignedData without SCEP attributes (e.g. an MDM check-in signature).
    der = cms.sign(b"hello", sim_scep.self_signed_cert(device_key, SUBJECT), FileKey(device_key))
    with pytest.raises(scep.SCEPError, match="missing"):
        scep.parse_pki_message(der, ca)


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(ca, data):
    with pytest.raises(scep.SCEPError):
        scep.parse_pki_message(data, ca)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_valid_message(ca, valid_request, data):
    msg = bytearray(valid_request)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(msg) - 1))
        if op == "flip":
            msg[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            msg[pos] = data.draw(st.sampled_from([0x00, 0x80, 0x81, 0x82, 0xFF, 0x30, 0xA0, 0x04]))
        elif op == "truncate":
            del msg[pos:]
        elif op == "insert":
            msg[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif len(msg) > 1:
            del msg[pos]
        if not msg:
            msg = bytearray(b"\x30")
    try:
        req = scep.parse_pki_message(bytes(msg), ca)
    except scep.SCEPError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    else:  # a mutation in an unsigned, unchecked spot (e.g. digestAlgorithms) is harmless
        assert req.challenge == "s3cret"


# --------------------------------------------------------------------------- OpenSSL interoperability

@pytest.fixture
def needs_openssl():
    # bash scripts/test installs openssl: missing means a broken machine, not a skip.
    if OPENSSL is None:
        pytest.fail("the openssl command line tool is missing: install Debian's openssl")


def _openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


@pytest.mark.usefixtures("needs_openssl")
def test_openssl_verifies_and_decrypts_cert_rep(ca, device_key, tmp_path):
    der, _, self_signed = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, "s3cret")
    req = scep.parse_pki_message(der, ca)
    issued = ca.issue_device_identity(req.csr.subject, req.csr.public_key(), 30)
    (tmp_path / "rep.der").write_bytes(scep.build_cert_rep(req, ca, issued))
    (tmp_path / "key.pem").write_bytes(_pem_key(device_key))
    (tmp_path / "self.pem").write_bytes(_pem_cert(self_signed))
    (tmp_path / "ca.pem").write_bytes(_pem_cert(ca.certificate))

    _openssl("cms", "-verify", "-noverify", "-inform", "DER", "-in", "rep.der", "-out", "env.der", cwd=tmp_path)
    # The signature must also be by *our* CA key, not just self-consistent.
    _openssl("cms", "-verify", "-noverify", "-inform", "DER", "-in", "rep.der", "-certfile", "ca.pem",
             "-nointern", "-out", "/dev/null", cwd=tmp_path)
    _openssl("cms", "-decrypt", "-inform", "DER", "-in", "env.der", "-inkey", "key.pem", "-recip", "self.pem",
             "-out", "degenerate.der", cwd=tmp_path)
    certs = _openssl("pkcs7", "-inform", "DER", "-in", "degenerate.der", "-print_certs", cwd=tmp_path).stdout
    assert x509.load_pem_x509_certificates(certs) == [issued]


@pytest.mark.usefixtures("needs_openssl")
def test_openssl_verifies_failure(ca, device_key, tmp_path):
    der, _, _ = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, "s3cret")
    (tmp_path / "fail.der").write_bytes(scep.build_failure(scep.parse_pki_message(der, ca), ca, "badRequest"))
    (tmp_path / "empty").write_bytes(b"")
    # FAILURE carries no pkcsPKIEnvelope: the signature covers empty content.
    _openssl("cms", "-verify", "-noverify", "-inform", "DER", "-in", "fail.der", "-content", "empty", "-out", "/dev/null", cwd=tmp_path)


@pytest.mark.usefixtures("needs_openssl")
@pytest.mark.parametrize("cipher, extra", [("-aes256", []), ("-aes128", []), ("-des3", []), ("-aes256", ["-keyid"])])
def test_server_decrypts_openssl_made_envelope(ca, device_key, tmp_path, cipher, extra):
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(SUBJECT)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, b"from-openssl")
        .sign(device_key, hashes.SHA256())
    )
    (tmp_path / "csr.der").write_bytes(csr.public_bytes(serialization.Encoding.DER))
    (tmp_path / "ca.pem").write_bytes(_pem_cert(ca.certificate))
    _openssl("cms", "-encrypt", "-binary", cipher, *extra, "-in", "csr.der", "-outform", "DER", "-out", "env.der", "ca.pem", cwd=tmp_path)
    der = _sign_outer((tmp_path / "env.der").read_bytes(), sim_scep.self_signed_cert(device_key, SUBJECT), device_key)
    assert scep.parse_pki_message(der, ca).challenge == "from-openssl"


def test_constructed_encrypted_content_is_accepted(ca, device_key):
    """Go's pkcs7 (scepclient) sends encryptedContent as definite-length constructed BER."""
    der, _, _ = sim_scep.build_pkcs_req(ca.certificate, device_key, SUBJECT, "s3cret", cipher="3des")
    env = acms.ContentInfo.load(cms.verify(der).content)["content"]
    eci = env["encrypted_content_info"]
    ct = eci["encrypted_content"].native
    chunks = b"".join(_tlv(0x04, ct[i:i + 64]) for i in range(0, len(ct), 64))
    new_eci = _tlv(0x30, eci["content_type"].dump() + eci["content_encryption_algorithm"].dump() + _tlv(0xA0, chunks))
    new_env = _tlv(0x30, env["version"].dump() + env["recipient_infos"].dump() + new_eci)
    content_info = _tlv(0x30, acms.ContentType("enveloped_data").dump() + _tlv(0xA0, new_env))
    outer = _sign_outer(content_info, sim_scep.self_signed_cert(device_key, SUBJECT), device_key)
    assert scep.parse_pki_message(outer, ca).challenge == "s3cret"


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(body)]) + body
    return bytes([tag]) + length + content
