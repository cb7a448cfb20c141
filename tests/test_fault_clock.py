"""Issue #22, item 6: a certificate that becomes valid minutes from now (this server's clock behind
the issuer's) is accepted within the documented tolerance and refused beyond it, with the reason."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ipad_mdm.crypto.ca import CertificateAuthority, create_ca
from ipad_mdm.crypto.keys import FileKey
from mdm import DeviceAuthError, judge_identity
from mdm.checkin import CLOCK_TOLERANCE


@pytest.fixture(scope="module")
def ca():
    cert, key = create_ca("Test CA (clock)", "Văn phòng Chính phủ", key_size=2048)
    return CertificateAuthority(cert, FileKey(key)), key


def _issued(ca, starts_in: dt.timedelta, lasts: dt.timedelta = dt.timedelta(days=30)):
    authority, key = ca
    device_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = dt.datetime.now(dt.timezone.utc) + starts_in
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipad")]))
            .issuer_name(authority.certificate.subject).public_key(device_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lasts)
            .sign(key, hashes.SHA256()))


def test_tolerance_is_five_minutes_by_default():
    assert CLOCK_TOLERANCE == dt.timedelta(minutes=5)


@pytest.mark.parametrize("starts_in, accepted", [
    (dt.timedelta(minutes=-1), True), (dt.timedelta(minutes=2), True), (dt.timedelta(minutes=4, seconds=30), True),
    (dt.timedelta(minutes=6), False), (dt.timedelta(hours=3), False)])
def test_not_yet_valid_within_and_beyond_tolerance(ca, starts_in, accepted):
    cert = _issued(ca, starts_in)
    if accepted:
        judge_identity(ca[0], cert, known=True, revoked_at=None)
        return
    with pytest.raises(DeviceAuthError) as refused:
        judge_identity(ca[0], cert, known=True, revoked_at=None)
    assert refused.value.code == "certificate_not_yet_valid" and "tolerance" in str(refused.value)


def test_expired_is_still_expired(ca):
    cert = _issued(ca, dt.timedelta(days=-40), dt.timedelta(days=30))
    with pytest.raises(DeviceAuthError) as refused:
        judge_identity(ca[0], cert, known=True, revoked_at=None)
    assert refused.value.code == "certificate_expired"
