"""Signing, CA and CMS operations with keys held on a real (SoftHSM2) PKCS#11 token.

Needs the tests.conftest_softhsm plugin (SoftHSM2 + softhsm2-util); the
interoperability checks also need the openssl command line tool.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import threading
import traceback
from pathlib import Path

import pytest
from asn1crypto import cms as acms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from ipad_mdm.config import Pkcs11Settings
from ipad_mdm.crypto import cms
from ipad_mdm.crypto.ca import CertificateAuthority, create_ca_for_key
from ipad_mdm.crypto.keys import FileKey, load_key
from ipad_mdm.crypto.pkcs11_keys import Pkcs11Error, Pkcs11Key, Pkcs11PinError

PROFILE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict>'
    b"<key>PayloadDisplayName</key><string>V\xc4\x83n ph\xc3\xb2ng Wi-Fi</string>"
    b"<key>PayloadType</key><string>Configuration</string></dict></plist>\n"
)


# --------------------------------------------------------------------------- helpers

def openssl(*args: str | Path) -> subprocess.CompletedProcess:
    exe = shutil.which("openssl")
    if exe is None:  # bash scripts/test installs it: missing means a broken machine, not a skip
        pytest.fail("the openssl command line tool is missing: install Debian's openssl")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=60)


def verify_with_public_key(public_key, signature: bytes, data: bytes, hash_alg=hashes.SHA256()) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), hash_alg)
    else:
        public_key.verify(signature, data, ec.ECDSA(hash_alg))


def pem(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def signature_of(der: bytes) -> bytes:
    return acms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature"].native


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def token_keys(softhsm_token):
    """One RSA-2048 and one EC P-256 signing key generated on the token."""
    return {
        "rsa": Pkcs11Key(softhsm_token.generate_rsa("sign-rsa")),
        "ec": Pkcs11Key(softhsm_token.generate_ec("sign-ec")),
    }


@pytest.fixture(params=["rsa", "ec"])
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def token_cas(softhsm_token):
    """Certificate authorities whose keys live on the token."""
    cas = {}
    for k, generate in (("rsa", softhsm_token.generate_rsa), ("ec", softhsm_token.generate_ec)):
        key = Pkcs11Key(generate(f"ca-{k}"))
        cas[k] = CertificateAuthority(create_ca_for_key(f"Test Device CA ({k})", "Test Office", key), key)
    return cas


@pytest.fixture(scope="module")
def file_keys():
    return {
        "rsa": FileKey(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ec": FileKey(ec.generate_private_key(ec.SECP256R1())),
    }


@pytest.fixture(params=["pkcs11-rsa", "pkcs11-ec", "file-rsa", "file-ec"])
def signer(request, token_keys, file_keys, token_cas, tmp_path):
    """(signer certificate, key handle, path of the CA PEM) for CMS tests."""
    store, k = request.param.split("-")
    key = token_keys[k] if store == "pkcs11" else file_keys[k]
    ca = token_cas["rsa"]
    cert = ca.issue_signer(f"Profile signer {request.param}", key.public_key())
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.certificate_pem)
    return cert, key, ca_pem


# --------------------------------------------------------------------------- raw signing

@pytest.mark.parametrize("hash_name,hash_alg", [("sha256", hashes.SHA256()), ("sha384", hashes.SHA384())])
def test_token_key_signature_verifies_with_public_key(token_keys, kind, hash_name, hash_alg):
    key = token_keys[kind]
    data = b"configuration profile bytes " * 50
    signature = key.sign(data, hash_name)
    public = key.public_key()
    assert isinstance(public, rsa.RSAPublicKey if kind == "rsa" else ec.EllipticCurvePublicKey)
    assert key.is_rsa is (kind == "rsa")
    verify_with_public_key(public, signature, data, hash_alg)
    with pytest.raises(InvalidSignature):
        verify_with_public_key(public, signature, data + b"!", hash_alg)


def test_private_key_cannot_be_extracted(softhsm_token, token_keys, kind):
    token_keys[kind].public_key()  # make sure the key exists and was found
    report = softhsm_token.private_key_report(f"sign-{kind}")
    assert report["SENSITIVE"] and report["ALWAYS_SENSITIVE"] and report["PRIVATE"] and report["TOKEN"]
    assert not report["EXTRACTABLE"] and report["NEVER_EXTRACTABLE"]
    # CKA_PRIVATE_EXPONENT / CKA_PRIME_* (RSA) and CKA_VALUE (EC) are refused by the token.
    assert report["secret_attributes"], report
    assert set(report["secret_attributes"].values()) == {"AttributeSensitive"}, report
    # Nor does the handle expose a key object the way FileKey.private_key does.
    assert not hasattr(token_keys[kind], "private_key")
    assert "PRIVATE" not in repr(token_keys[kind]).upper()


def test_two_handles_on_one_token_share_the_login(softhsm_token, token_keys):
    # The CA key and the profile-signing key usually sit on the same USB token;
    # PKCS#11 allows only one login per process and token.
    again = Pkcs11Key(softhsm_token.settings("sign-rsa"))
    other = load_key(pkcs11_settings=softhsm_token.settings("sign-ec"))
    for key in (token_keys["rsa"], again, other, token_keys["ec"]):
        verify_with_public_key(key.public_key(), key.sign(b"x"), b"x")


def test_concurrent_signing_from_threads(token_keys):
    errors: list[BaseException] = []

    def work(key):
        try:
            for i in range(10):
                data = f"message {i}".encode()
                verify_with_public_key(key.public_key(), key.sign(data), data)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(token_keys[k],)) for k in ("rsa", "ec") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)  # a bound for a hung token, not a timing check
    assert [t for t in threads if t.is_alive()] == [], "a signing thread hung"
    assert not errors, errors


# --------------------------------------------------------------------------- RSA decryption (SCEP)

def test_rsa_decrypt_on_token_round_trips(token_keys):
    key = token_keys["rsa"]
    secret = os.urandom(32)  # e.g. a CMS content-encryption key
    ciphertext = key.public_key().encrypt(secret, padding.PKCS1v15())
    assert key.decrypt(ciphertext) == secret


def test_rsa_decrypt_failure_is_a_plain_value_error(token_keys):
    # Bad PKCS#1 v1.5 padding surfaces as the generic ValueError("Decryption
    # failed"), never a token-specific exception SCEP code could branch on
    # (Bleichenbacher oracle). (FileKey may instead return a random plaintext:
    # OpenSSL's implicit rejection; the later symmetric decryption then fails.)
    garbage = b"\x01" * 256
    with pytest.raises(ValueError, match="^Decryption failed$"):
        token_keys["rsa"].decrypt(garbage)
    with pytest.raises(TypeError):
        token_keys["ec"].decrypt(garbage)


# --------------------------------------------------------------------------- CA on the token

def test_ca_on_token_issues_certificate_and_crl(token_cas, kind, tmp_path):
    ca = token_cas[kind]
    assert ca.certificate.public_key().public_numbers() == ca.key.public_key().public_numbers()
    device_key = ec.generate_private_key(ec.SECP256R1())
    good = ca.issue_device_identity(name("iPad 1"), device_key.public_key(), days=365)
    revoked = ca.issue_device_identity(name("iPad 2"), device_key.public_key(), days=365)
    crl = ca.build_crl([(revoked.serial_number, dt.datetime.now(dt.timezone.utc))], number=7)

    assert ca.issued_this(good) and ca.issued_this(revoked)
    assert crl.is_signature_valid(ca.certificate.public_key())

    ca_pem, good_pem, revoked_pem, crl_pem = (tmp_path / n for n in ("ca.pem", "good.pem", "revoked.pem", "crl.pem"))
    ca_pem.write_bytes(ca.certificate_pem)
    good_pem.write_bytes(pem(good))
    revoked_pem.write_bytes(pem(revoked))
    crl_pem.write_bytes(pem(crl))

    # The self-signed root itself verifies (its signature was made on the token).
    root = openssl("verify", "-CAfile", ca_pem, ca_pem)
    assert root.returncode == 0, root.stdout + root.stderr
    res = openssl("verify", "-CAfile", ca_pem, good_pem)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr

    res = openssl("crl", "-in", crl_pem, "-CAfile", ca_pem, "-noout", "-verify")
    assert res.returncode == 0 and "verify OK" in res.stdout + res.stderr, res.stdout + res.stderr

    # The CRL is usable for revocation checking, not just well-signed.
    res = openssl("verify", "-crl_check", "-CRLfile", crl_pem, "-CAfile", ca_pem, good_pem)
    assert res.returncode == 0, res.stdout + res.stderr
    res = openssl("verify", "-crl_check", "-CRLfile", crl_pem, "-CAfile", ca_pem, revoked_pem)
    assert res.returncode != 0 and "revoked" in (res.stdout + res.stderr).lower(), res.stdout + res.stderr


def test_certificate_signed_by_other_ca_is_rejected(token_cas, tmp_path):
    device = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = token_cas["ec"].issue_device_identity(name("iPad 3"), device, days=30)
    assert not token_cas["rsa"].issued_this(cert)
    (tmp_path / "ca.pem").write_bytes(token_cas["rsa"].certificate_pem)
    (tmp_path / "c.pem").write_bytes(pem(cert))
    assert openssl("verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "c.pem").returncode != 0


# --------------------------------------------------------------------------- CMS

@pytest.mark.parametrize("detached", [False, True], ids=["attached", "detached"])
def test_cms_signature_verifies_with_openssl_and_ours(signer, detached, tmp_path):
    cert, key, ca_pem = signer
    der = cms.sign(PROFILE, cert, key, detached=detached)
    sig, content, out = tmp_path / "sig.der", tmp_path / "content.bin", tmp_path / "out.bin"
    sig.write_bytes(der)
    content.write_bytes(PROFILE)

    args = ["cms", "-verify", "-CAfile", ca_pem, "-inform", "DER", "-in", sig, "-out", out]
    if detached:
        args += ["-content", content, "-binary"]
    res = openssl(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.read_bytes() == PROFILE

    result = cms.verify(der, detached_content=PROFILE if detached else None)
    assert result.content == PROFILE
    assert result.signer == cert
    assert result.attribute("content_type").native == "data"


@pytest.mark.parametrize("detached", [False, True], ids=["attached", "detached"])
def test_cms_tampered_content_fails(signer, detached, tmp_path):
    cert, key, ca_pem = signer
    der = cms.sign(PROFILE, cert, key, detached=detached)
    tampered_profile = PROFILE.replace(b"Wi-Fi", b"Wi-Fj")
    sig, content = tmp_path / "sig.der", tmp_path / "content.bin"
    if detached:
        sig.write_bytes(der)
        content.write_bytes(tampered_profile)
        res = openssl("cms", "-verify", "-CAfile", ca_pem, "-inform", "DER", "-in", sig, "-content", content,
                      "-binary", "-out", os.devnull)
        with pytest.raises(cms.CMSError):
            cms.verify(der, detached_content=tampered_profile)
    else:
        at = der.index(PROFILE)  # the profile is embedded verbatim in the eContent OCTET STRING
        bad = der[:at] + tampered_profile + der[at + len(PROFILE):]
        sig.write_bytes(bad)
        res = openssl("cms", "-verify", "-CAfile", ca_pem, "-inform", "DER", "-in", sig, "-out", os.devnull)
        with pytest.raises(cms.CMSError):
            cms.verify(bad)
    assert res.returncode != 0, res.stdout + res.stderr


def test_cms_tampered_signature_fails(signer, tmp_path):
    cert, key, ca_pem = signer
    der = cms.sign(PROFILE, cert, key)
    signature = signature_of(der)
    at = der.rindex(signature)
    # Flip a bit in the middle: for ECDSA that stays well-formed DER but is a wrong value.
    bad = flip_byte(der, at + len(signature) // 2)
    (tmp_path / "sig.der").write_bytes(bad)
    res = openssl("cms", "-verify", "-CAfile", ca_pem, "-inform", "DER", "-in", tmp_path / "sig.der", "-out", os.devnull)
    assert res.returncode != 0, res.stdout + res.stderr
    with pytest.raises(cms.CMSError):
        cms.verify(bad)


def test_cms_signer_certificate_must_match_key(token_keys, token_cas):
    cert = token_cas["rsa"].issue_signer("mismatched", token_keys["ec"].public_key())
    with pytest.raises(ValueError):
        cms.sign(PROFILE, cert, token_keys["rsa"])


# --------------------------------------------------------------------------- login errors

def test_wrong_pin_gives_clear_error_without_the_pin(softhsm_pin_token, tmp_path):
    # This token is never logged into before this test: once a process is
    # logged in to a token, PKCS#11 lets new sessions in without a PIN.
    label = "pin-check"
    right = softhsm_pin_token.generate_rsa(label)
    wrong_pin = "wrong-pin-31337"
    key = Pkcs11Key(softhsm_pin_token.settings(label, pin=wrong_pin))

    with pytest.raises(Pkcs11PinError) as info:
        key.sign(b"data")
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err, Pkcs11Error)
    assert softhsm_pin_token.token_label in str(err)
    assert "incorrect PIN" in str(err)
    text = "".join(traceback.format_exception(err))
    assert wrong_pin not in text and wrong_pin not in repr(err) and wrong_pin not in repr(key)

    # The same wrong PIN is not sent again (each try counts towards locking a USB token).
    with pytest.raises(Pkcs11PinError, match="not retrying"):
        key.public_key()

    # A PIN file is named in the message (so the operator knows what to fix), its content is not.
    pin_file = tmp_path / "pin"
    pin_file.write_text("another-wrong-pin\n")
    with pytest.raises(Pkcs11PinError) as info:
        Pkcs11Key(softhsm_pin_token.settings(label, pin=None, pin_file=str(pin_file))).sign(b"data")
    assert str(pin_file) in str(info.value) and "another-wrong-pin" not in str(info.value)

    # Once the configuration is corrected the key works.
    good = Pkcs11Key(right)
    verify_with_public_key(good.public_key(), good.sign(b"data"), b"data")


def test_missing_token_or_key_is_named(softhsm_token, token_keys):
    with pytest.raises(Pkcs11Error, match="no-such-token"):
        Pkcs11Key(Pkcs11Settings(softhsm_token.module, "no-such-token", "k", pin=softhsm_token.pin)).sign(b"x")
    with pytest.raises(Pkcs11Error, match="no-such-key"):
        Pkcs11Key(softhsm_token.settings("no-such-key")).sign(b"x")


# --------------------------------------------------------------------------- fork (gunicorn / Celery prefork)

def _sign_in_child(key, data: bytes) -> bytes:
    """Fork; the child signs with the inherited handle and sends the result through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(read_fd)
            signature = key.sign(data)
            verify_with_public_key(key.public_key(), signature, data)
            os.write(write_fd, b"OK" + signature)
            status = 0
        except BaseException as exc:  # noqa: BLE001 - report to the parent
            os.write(write_fd, b"ER" + f"{type(exc).__name__}: {exc}".encode()[:4000])
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    reply = b"".join(chunks)
    assert reply[:2] == b"OK" and os.waitstatus_to_exitcode(status) == 0, reply[2:].decode(errors="replace")
    return reply[2:]


def test_token_key_works_after_fork(token_keys, kind):
    key = token_keys[kind]
    key.sign(b"warm up: the parent already holds a logged-in session")
    data = b"signed in a forked worker"
    signature = _sign_in_child(key, data)
    verify_with_public_key(key.public_key(), signature, data)
    # The child's re-initialisation did not disturb the parent's session.
    verify_with_public_key(key.public_key(), key.sign(data), data)
    # And a second generation of workers works too.
    verify_with_public_key(key.public_key(), _sign_in_child(key, data), data)


def test_key_recovers_when_the_session_is_lost(softhsm_token, token_keys):
    # As after a token was unplugged and re-inserted: the cached session handle
    # is invalid and the process is logged out. The next operation reconnects.
    from ipad_mdm.crypto import pkcs11_keys as keys_module

    key = token_keys["rsa"]
    key.sign(b"x")
    shared = keys_module._tokens[(softhsm_token.module, softhsm_token.token_label)]
    shared.session.close()  # C_Logout + C_CloseSession behind the handle's back
    for k in (key, token_keys["ec"]):
        verify_with_public_key(k.public_key(), k.sign(b"after reconnect"), b"after reconnect")
