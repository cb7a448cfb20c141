"""cms.sign writes SignedData as DER by hand: byte for byte what asn1crypto builds from the same
parts (the reference below is the builder it replaced), and what cms.verify, OpenSSL and the
device-side parsers accept."""
from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import FileKey

NOW = dt.datetime(2026, 12, 4, 21, 30, 5, 123456, tzinfo=dt.timezone.utc)


def _cert(key, serial: int, cn: str, issuer: str):
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer),
                                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Văn phòng")]))
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNERS = {
    "rsa, serial with the high bit": (RSA_KEY, _cert(RSA_KEY, 0x00F1E2D3C4B5A69788, "Ký hồ sơ", "CA")),
    "rsa, small serial": (RSA_KEY, _cert(RSA_KEY, 1, "Ký hồ sơ", "CA")),
    "rsa, 20-byte serial": (RSA_KEY, _cert(RSA_KEY, (1 << 159) - 12345, "Ký hồ sơ", "CA")),
    "ecdsa": (EC_KEY, _cert(EC_KEY, 0x7F, "EC", "CA")),
}
CHAIN = _cert(rsa.generate_private_key(public_exponent=65537, key_size=2048), 99, "CA", "CA")


def _reference(content, signer_cert, key, *, detached=False, extra_certs=None, hash_name="sha256",
               signed_attrs_extra=None, content_type="data") -> bytes:
    """The asn1crypto builder cms.sign used before (same signature bytes: RSA PKCS#1 v1.5 is deterministic)."""
    import hashlib

    digest = getattr(hashlib, hash_name)(content).digest()
    attrs = [{"type": "content_type", "values": [content_type]},
             {"type": "signing_time", "values": [acms.Time({"utc_time": core.UTCTime(NOW)})]},
             {"type": "message_digest", "values": [digest]}]
    attrs.extend(signed_attrs_extra or [])
    signed_attrs = acms.CMSAttributes(attrs)
    pub = key.public_key()
    signature = FileKey(key).sign(signed_attrs.dump(), hash_name)
    sig_alg = {"algorithm": "rsassa_pkcs1v15"} if isinstance(pub, rsa.RSAPublicKey) else {"algorithm": f"{hash_name}_ecdsa"}
    a_cert = ax509.Certificate.load(signer_cert.public_bytes(serialization.Encoding.DER))
    signer_info = {"version": "v1",
                   "sid": acms.SignerIdentifier({"issuer_and_serial_number": {"issuer": a_cert.issuer,
                                                                               "serial_number": a_cert.serial_number}}),
                   "digest_algorithm": {"algorithm": hash_name}, "signed_attrs": signed_attrs,
                   "signature_algorithm": sig_alg, "signature": signature}
    certs = [a_cert] + [ax509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in extra_certs or []]
    encap = {"content_type": content_type}
    if not detached:
        encap["content"] = content
    signed_data = acms.SignedData({"version": "v1" if content_type == "data" else "v3",
                                   "digest_algorithms": [{"algorithm": hash_name}], "encap_content_info": encap,
                                   "certificates": certs, "signer_infos": [signer_info]})
    return acms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


@pytest.fixture
def frozen_clock(monkeypatch):
    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return NOW

    monkeypatch.setattr(cms.dt, "datetime", Frozen)


def _scep_attrs(nonce: bytes, txid: str):
    return [{"type": "2.16.840.1.113733.1.9.2", "values": [core.PrintableString("3")]},
            {"type": "2.16.840.1.113733.1.9.3", "values": [core.PrintableString("0")]},
            {"type": "2.16.840.1.113733.1.9.7", "values": [core.UTF8String(txid)]},
            {"type": "2.16.840.1.113733.1.9.6", "values": [core.OctetString(nonce)]}]


@pytest.mark.parametrize("signer", list(SIGNERS))
@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("detached", [False, True])
def test_the_same_bytes_as_asn1crypto(frozen_clock, signer, hash_name, detached):
    key, cert = SIGNERS[signer]
    for content, extra_certs, extra_attrs in ((b"", None, None), (b"<plist/>" * 40, [CHAIN], None),
                                              (bytes(range(256)) * 300, [CHAIN, CHAIN], _scep_attrs(b"n" * 16, "Mã-1"))):
        kwargs = dict(detached=detached, extra_certs=extra_certs, hash_name=hash_name, signed_attrs_extra=extra_attrs)
        got = cms.sign(content, cert, FileKey(key), **kwargs)
        assert got == _reference(content, cert, key, **kwargs) or isinstance(key, ec.EllipticCurvePrivateKey)
        verified = cms.verify(got, detached_content=content if detached else None)
        assert verified.signer == cert and verified.content == content
        if isinstance(key, ec.EllipticCurvePrivateKey):
            # ECDSA signatures are randomised: the same bytes except the signature's.
            ref = acms.ContentInfo.load(_reference(content, cert, key, **kwargs))
            mine = acms.ContentInfo.load(got)
            for part in (ref, mine):
                part["content"]["signer_infos"][0]["signature"] = b""
            assert mine.dump(force=True) == ref.dump(force=True)


@given(content=st.binary(max_size=3000), detached=st.booleans(), txid=st.text(min_size=1, max_size=40),
       nonce=st.binary(min_size=1, max_size=40), chain=st.integers(0, 2))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_content_and_attributes_give_the_same_bytes(frozen_clock, content, detached, txid, nonce, chain):
    key, cert = SIGNERS["rsa, serial with the high bit"]
    kwargs = dict(detached=detached, extra_certs=[CHAIN] * chain, signed_attrs_extra=_scep_attrs(nonce, txid))
    assert cms.sign(content, cert, FileKey(key), **kwargs) == _reference(content, cert, key, **kwargs)


def test_openssl_verifies_an_embedded_profile_signature(tmp_path):
    key, cert = SIGNERS["rsa, serial with the high bit"]
    content = "<plist><dict><key>PayloadDisplayName</key><string>Hồ sơ</string></dict></plist>".encode()
    (tmp_path / "signed.der").write_bytes(cms.sign(content, cert, FileKey(key), extra_certs=[CHAIN]))
    (tmp_path / "signer.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "signed.der"),
                          "-noverify", "-certfile", str(tmp_path / "signer.pem")], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == content


def test_a_key_that_is_not_the_certificates_is_refused():
    key, cert = SIGNERS["rsa, small serial"]
    with pytest.raises(ValueError, match="does not belong"):
        cms.sign(b"x", cert, FileKey(EC_KEY))
