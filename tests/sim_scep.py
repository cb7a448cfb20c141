"""SCEP client side for the device simulator and tests (what an iPad does).

Built independently of mdm.scep's envelope code (only the generic CMS
signer/verifier is shared) so the tests cross-check the two sides.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import AttributeOID

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import FileKey

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

_OID = "2.16.840.1.113733.1.9."
MESSAGE_TYPE, PKI_STATUS, FAIL_INFO = _OID + "2", _OID + "3", _OID + "4"
SENDER_NONCE, RECIPIENT_NONCE, TRANSACTION_ID = _OID + "5", _OID + "6", _OID + "7"
FAIL_INFO_NAMES = {"0": "badAlg", "1": "badMessageCheck", "2": "badRequest", "3": "badTime", "4": "badCertId"}

# name -> (asn1crypto algorithm, cipher factory, key bytes, block bytes)
CIPHERS = {
    "aes256": ("aes256_cbc", algorithms.AES, 32, 16),
    "aes128": ("aes128_cbc", algorithms.AES, 16, 16),
    "3des": ("tripledes_3key", TripleDES, 24, 8),
}
_BY_OID_NAME = {v[0]: v for v in CIPHERS.values()}


class SCEPFailure(Exception):
    """The CA answered CertRep FAILURE (or PENDING)."""

    def __init__(self, status: str, fail_info: str | None):
        super().__init__(f"SCEP pkiStatus {status}, failInfo {fail_info}")
        self.status = status
        self.fail_info = fail_info


def ca_and_recipient(body: bytes, content_type: str, expected_ca: x509.Certificate) -> tuple[x509.Certificate, x509.Certificate]:
    """GetCACert as an iPad reads it: the CA alone (x509-ca-cert), or the CA with a registration
    authority (x509-ca-ra-cert, a certs-only PKCS#7). Returns (CA, the certificate to encrypt the
    request to and to expect the answer signed by): the RA — a certificate the CA issued, not itself a
    CA, allowing key encipherment — when there is one, else the CA."""
    if content_type.split(";")[0].strip() == "application/x-x509-ca-cert":
        certs = [x509.load_der_x509_certificate(body)]
    elif content_type.split(";")[0].strip() == "application/x-x509-ca-ra-cert":
        certs = [x509.load_der_x509_certificate(c.chosen.dump())
                 for c in acms.ContentInfo.load(body)["content"]["certificates"]]
    else:
        raise ValueError(f"GetCACert answered {content_type!r}")
    if expected_ca not in certs:
        raise ValueError("GetCACert does not hold the profile's CA")
    for cert in certs:
        if cert == expected_ca:
            continue
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not basic.ca and usage.key_encipherment and cert.issuer == expected_ca.subject:
            cert.verify_directly_issued_by(expected_ca)
            return expected_ca, cert
    return expected_ca, expected_ca


def build_pkcs_req(
    ca_cert: x509.Certificate,
    private_key,
    subject: x509.Name,
    challenge: str,
    *,
    cipher: str = "aes256",
    message_type: str = "19",
    signer: tuple[x509.Certificate, object] | None = None,
) -> tuple[bytes, str, x509.Certificate]:
    """A PKCSReq like an iPad sends: (DER pkiMessage, transactionID, self-signed cert).

    ``signer=(cert, key)`` signs with an existing identity instead (RenewalReq,
    with ``message_type='17'``); the returned certificate is then that one.
    """
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    csr = builder.sign(private_key, hashes.SHA256())
    spki = private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    transaction_id = hashlib.sha256(spki).hexdigest()
    if signer is None:
        signer_cert, signer_key = self_signed_cert(private_key, subject), private_key
    else:
        signer_cert, signer_key = signer
    envelope = encrypt_envelope(csr.public_bytes(serialization.Encoding.DER), ca_cert, cipher)
    attrs = [
        {"type": MESSAGE_TYPE, "values": [core.PrintableString(message_type)]},
        {"type": TRANSACTION_ID, "values": [core.PrintableString(transaction_id)]},
        {"type": SENDER_NONCE, "values": [core.OctetString(os.urandom(16))]},
    ]
    der = cms.sign(envelope, signer_cert, FileKey(signer_key), signed_attrs_extra=attrs)
    return der, transaction_id, signer_cert


def self_signed_cert(private_key, subject: x509.Name) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )


def encrypt_envelope(plaintext: bytes, recipient: x509.Certificate, cipher: str = "aes256") -> bytes:
    alg, make, key_len, block = CIPHERS[cipher]
    key, iv = os.urandom(key_len), os.urandom(block)
    padder = sym_padding.PKCS7(block * 8).padder()
    enc = Cipher(make(key), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padder.update(plaintext) + padder.finalize()) + enc.finalize()
    a_cert = ax509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    ktri = {
        "version": "v0",
        "rid": {"issuer_and_serial_number": {"issuer": a_cert.issuer, "serial_number": a_cert.serial_number}},
        "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
        "encrypted_key": recipient.public_key().encrypt(key, asym_padding.PKCS1v15()),
    }
    env = acms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [acms.RecipientInfo(name="ktri", value=ktri)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": alg, "parameters": core.OctetString(iv)},
                "encrypted_content": ciphertext,
            },
        }
    )
    return acms.ContentInfo({"content_type": "enveloped_data", "content": env}).dump()


def parse_cert_rep(
    der: bytes,
    ca_cert: x509.Certificate,
    private_key,
    self_signed_cert: x509.Certificate,
    *,
    request: bytes | None = None,
    csr_key=None,
) -> x509.Certificate:
    """Verify the CA's (or its RA's: ``ca_cert`` is the certificate the answer must be signed by)
    CertRep and return the issued certificate.

    Raises SCEPFailure on FAILURE/PENDING, cms.CMSError/ValueError on a bad
    message. With ``request`` (the DER we sent), transactionID and
    recipientNonce are checked against it too. ``csr_key`` is the public key
    that was certified when it differs from ``private_key`` (renewal with a
    new key: the reply is encrypted to the old identity).
    """
    signed_data = cms.parse_signed_data(der)
    has_content = signed_data["encap_content_info"]["content"].native is not None
    sig = cms.verify(der, detached_content=None if has_content else b"")
    if sig.signer != ca_cert:
        raise ValueError("CertRep not signed by the CA")
    attrs = {a["type"].dotted: core.load(a["values"][0].dump()).native for a in sig.signed_attrs}
    if attrs.get(MESSAGE_TYPE) != "3":
        raise ValueError(f"not a CertRep: messageType {attrs.get(MESSAGE_TYPE)}")
    if request is not None:
        req = cms.verify(request)
        req_attrs = {a["type"].dotted: core.load(a["values"][0].dump()).native for a in req.signed_attrs}
        if attrs.get(TRANSACTION_ID) != req_attrs[TRANSACTION_ID]:
            raise ValueError("transactionID mismatch")
        if attrs.get(RECIPIENT_NONCE) != req_attrs[SENDER_NONCE]:
            raise ValueError("recipientNonce does not echo our senderNonce")
    status = attrs.get(PKI_STATUS)
    if status == "2":
        raise SCEPFailure("FAILURE", FAIL_INFO_NAMES.get(attrs.get(FAIL_INFO), attrs.get(FAIL_INFO)))
    if status == "3":
        raise SCEPFailure("PENDING", None)
    if status != "0":
        raise ValueError(f"unknown pkiStatus {status!r}")
    degenerate = decrypt_envelope(sig.content, private_key, self_signed_cert)
    certs = acms.ContentInfo.load(degenerate)["content"]["certificates"]
    want = (csr_key or private_key.public_key()).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for choice in certs:
        cert = x509.load_der_x509_certificate(choice.chosen.dump())
        if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == want:
            return cert
    raise ValueError("CertRep holds no certificate for our key")


def decrypt_envelope(der: bytes, private_key, recipient: x509.Certificate) -> bytes:
    env = acms.ContentInfo.load(der)["content"]
    a_cert = ax509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    for ri in env["recipient_infos"]:
        ias = ri.chosen["rid"].chosen
        if ias["serial_number"].native == a_cert.serial_number and ias["issuer"] == a_cert.issuer:
            key = private_key.decrypt(ri.chosen["encrypted_key"].native, asym_padding.PKCS1v15())
            break
    else:
        raise ValueError("envelope not addressed to us")
    eci = env["encrypted_content_info"]
    alg, make, _, block = _BY_OID_NAME[eci["content_encryption_algorithm"]["algorithm"].native]
    iv = eci["content_encryption_algorithm"]["parameters"].native
    dec = Cipher(make(key), modes.CBC(iv)).decryptor()
    padded = dec.update(eci["encrypted_content"].native) + dec.finalize()
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    return unpadder.update(padded) + unpadder.finalize()
