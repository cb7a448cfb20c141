"""ipad_mdm.crypto.cms_fast against the reference, cms.verify (asn1crypto): on the messages an iPad
sends it finds the same signer; on anything else it declines (None) and never accepts what the
reference refuses — checked on generated messages and on every kind of byte mutation of them."""
from __future__ import annotations

import base64
import datetime as dt
import plistlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipad_mdm.crypto import cms, cms_fast
from ipad_mdm.crypto.keys import FileKey
from mdm import checkin


def _identity(key, serial: int, issuer: str = "Thiết bị MDM CA"):
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipad-identity")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CERT = _identity(KEY, 0x00F1E2D3C4B5A69788)  # a serial whose first byte has the high bit: signed DER INTEGER
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = _identity(OTHER_KEY, 7, issuer="CA khác")
BODY = plistlib.dumps({"UDID": "00008030-001A2B3C4D5E6F70", "Status": "Idle"})


def _reference(der: bytes, content: bytes):
    try:
        return cms.verify(der, detached_content=content).signer
    except cms.CMSError:
        return None


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("extra", [[], [OTHER]])
def test_the_shape_ipads_send_gives_the_same_signer(hash_name, extra):
    der = cms.sign(BODY, CERT, FileKey(KEY), detached=True, hash_name=hash_name, extra_certs=extra)
    assert cms_fast.detached_signer(der, BODY) == CERT == _reference(der, BODY)
    assert cms_fast.detached_signer(der, BODY + b" ") is None  # another body: declined, the reference refuses
    assert _reference(der, BODY + b" ") is None
    # What the check-in view calls: the same certificate, whichever path answered.
    assert checkin.certificate_from_signature(BODY, base64.b64encode(der).decode()) == CERT


def test_other_shapes_are_left_to_the_reference():
    # Embedded content, an ECDSA signer: valid, but not this module's shape.
    embedded = cms.sign(BODY, CERT, FileKey(KEY), detached=False)
    assert cms_fast.detached_signer(embedded, BODY) is None and _reference(embedded, BODY) == CERT
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_cert = _identity(ec_key, 11)
    signed = cms.sign(BODY, ec_cert, FileKey(ec_key), detached=True)
    assert cms_fast.detached_signer(signed, BODY) is None and _reference(signed, BODY) == ec_cert
    # A second message-digest attribute (an attacker choosing which one is read): refused by both.
    twice = cms.sign(BODY, CERT, FileKey(KEY), detached=True,
                     signed_attrs_extra=[{"type": "message_digest", "values": [b"\x00" * 32]}])
    assert cms_fast.detached_signer(twice, BODY) is None and _reference(twice, BODY) is None
    # Signed by one key, naming another certificate as the signer.
    forged = cms.sign(BODY, OTHER, FileKey(OTHER_KEY), detached=True, extra_certs=[CERT])
    swapped = forged.replace(OTHER.public_bytes(Encoding.DER), CERT.public_bytes(Encoding.DER), 1)
    assert cms_fast.detached_signer(swapped, BODY) is None
    # Not CMS at all.
    for junk in (b"", b"\x30", b"\x30\x80\x00\x00", b"\x30\x84\xff\xff\xff\xff", BODY):
        assert cms_fast.detached_signer(junk, BODY) is None


SIGNED = {h: cms.sign(BODY, CERT, FileKey(KEY), detached=True, hash_name=h, extra_certs=[OTHER])
          for h in ("sha1", "sha256")}


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hash_name=st.sampled_from(sorted(SIGNED)), data=st.data())
def test_mutations_never_accepted_beyond_the_reference(hash_name, data):
    der = bytearray(SIGNED[hash_name])
    kind = data.draw(st.sampled_from(["flip", "set", "truncate", "append", "insert", "delete"]))
    at = data.draw(st.integers(0, len(der) - 1))
    if kind == "flip":
        der[at] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "set":
        der[at] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        del der[at:]
    elif kind == "append":
        der += data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "insert":
        der[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    else:
        del der[at:at + data.draw(st.integers(1, 8))]
    fast = cms_fast.detached_signer(bytes(der), BODY)
    if fast is not None:
        assert _reference(bytes(der), BODY) == fast
