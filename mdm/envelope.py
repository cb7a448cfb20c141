"""CMS EnvelopedData with RSA key transport (RFC 5652 6): what SCEP's pkcsPKIEnvelope is, and what
Apple Business Manager's server token is wrapped in. Pure, no web framework.

Opening goes through a holder's ``key.decrypt`` only, so the key may live on a PKCS#11 token.
"""
from __future__ import annotations

import hmac
import logging
import os

from asn1crypto import cms as acms
from asn1crypto import core, parser
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

try:  # cryptography >= 43 moved 3DES to the "decrepit" namespace
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

log = logging.getLogger("mdm.scep")


class EnvelopeError(ValueError):
    """An envelope that cannot be opened or sealed; ``fail_info`` is SCEP's name for why."""

    def __init__(self, message: str, fail_info: str = "badRequest"):
        super().__init__(message)
        self.fail_info = fail_info


# asn1crypto algorithm name -> (cryptography cipher factory, key bytes, block bytes)
# What cryptography's PKCS7EnvelopeBuilder seals; the others (3DES, AES-192) by asn1crypto below.
_LIBRARY_CIPHERS = {"aes128_cbc": algorithms.AES128, "aes256_cbc": algorithms.AES256}
_CIPHERS = {
    "aes128_cbc": (algorithms.AES, 16, 16),
    "aes192_cbc": (algorithms.AES, 24, 16),
    "aes256_cbc": (algorithms.AES, 32, 16),
    "tripledes_3key": (TripleDES, 24, 8),
    # Single DES is broken, but micromdm's scepclient (go.mozilla.org/pkcs7
    # default) still sends it; we accept it inbound and never reply with it.
    "des": (lambda k: TripleDES(k * 3), 8, 8),
}


def open_envelope(der: bytes, *holders) -> tuple[bytes, str]:
    """Open an envelope addressed to one of `holders` (each with .certificate and .key), in order."""
    info = acms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != "enveloped_data":
        raise EnvelopeError("pkcsPKIEnvelope is not EnvelopedData")
    env = info["content"]
    ktri, holder = None, None
    for holder in holders:
        ktri = _recipient_for(env["recipient_infos"], holder.certificate)
        if ktri is not None:
            break
    if ktri is None:
        raise EnvelopeError("pkcsPKIEnvelope is not encrypted to this CA", "badCertId")
    if ktri["key_encryption_algorithm"]["algorithm"].native != "rsaes_pkcs1v15":
        raise EnvelopeError("unsupported key transport algorithm", "badAlg")
    eci = env["encrypted_content_info"]
    alg = eci["content_encryption_algorithm"]["algorithm"].native
    if alg not in _CIPHERS:
        raise EnvelopeError(f"unsupported content encryption {alg}", "badAlg")
    make_cipher, key_len, block = _CIPHERS[alg]
    iv = eci["content_encryption_algorithm"]["parameters"]
    iv = iv.native if isinstance(iv, core.OctetString) else None
    ciphertext = _encrypted_content(eci)
    if not isinstance(iv, bytes) or len(iv) != block:
        raise EnvelopeError("bad content encryption IV", "badAlg")
    if not ciphertext or len(ciphertext) % block:
        raise EnvelopeError("bad encrypted content length")

    key = _unwrap_key(ktri["encrypted_key"].native, holder, key_len)
    try:
        decryptor = Cipher(make_cipher(key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(block * 8).unpadder()
        return unpadder.update(padded) + unpadder.finalize(), alg
    except ValueError:
        # Same message whether the RSA layer or the CBC padding failed: no oracle.
        raise EnvelopeError("cannot decrypt pkcsPKIEnvelope", "badMessageCheck") from None


def _encrypted_content(eci) -> bytes:
    # Read encryptedContent by hand: Go's pkcs7 (micromdm scepclient) sends it
    # as a definite-length *constructed* [0] of OCTET STRING chunks. That is
    # valid BER, but asn1crypto only accepts constructed strings in indefinite
    # form, so eci["encrypted_content"] would raise on it.
    data, pos, found = eci.contents, 0, None
    while pos < len(data):
        class_, method, tag, header, contents, trailer = parser.parse(data[pos:])
        pos += len(header) + len(contents) + len(trailer)
        if class_ == 2 and tag == 0:
            found = contents if method == 0 else _octet_chunks(contents, depth=0)
    if not found:
        raise EnvelopeError("pkcsPKIEnvelope has no encrypted content")
    return found


def _octet_chunks(data: bytes, depth: int) -> bytes:
    if depth > 4:
        raise EnvelopeError("encrypted content nested too deeply")
    out, pos = [], 0
    while pos < len(data):
        class_, method, tag, header, contents, trailer = parser.parse(data[pos:])
        pos += len(header) + len(contents) + len(trailer)
        if class_ != 0 or tag != 4:
            raise EnvelopeError("encrypted content chunk is not an OCTET STRING")
        out.append(contents if method == 0 else _octet_chunks(contents, depth + 1))
    return b"".join(out)


def _unwrap_key(encrypted_key: bytes, holder, key_len: int) -> bytes:
    # Bleichenbacher defence (RFC 3218 2.3.2): on any RSA or length failure go on
    # with a random key, so the caller sees one error for every kind of bad input.
    modulus_bytes = (holder.certificate.public_key().key_size + 7) // 8
    key = None
    if len(encrypted_key) == modulus_bytes:
        try:
            key = holder.key.decrypt(encrypted_key)
        except ValueError:
            key = None
        except Exception as exc:  # token errors: keep the response uniform, but tell the operator
            log.warning("SCEP: CA key decrypt failed: %s", type(exc).__name__)
            key = None
    if key is None or len(key) != key_len:
        key = os.urandom(key_len)
    return key


def _recipient_for(recipient_infos, ca_cert: x509.Certificate):
    a_cert = ax509.Certificate.load(ca_cert.public_bytes(serialization.Encoding.DER))
    ski = a_cert.key_identifier
    for ri in recipient_infos:
        if ri.name != "ktri":
            continue
        rid = ri.chosen["rid"]
        if rid.name == "issuer_and_serial_number":
            ias = rid.chosen
            # The same DER is the same name; asn1crypto's comparison (LDAP string preparation of
            # every attribute) was a sixth of a PKIOperation, so it only settles differing encodings.
            if ias["serial_number"].native == a_cert.serial_number and (
                    ias["issuer"].dump() == a_cert.issuer.dump() or ias["issuer"] == a_cert.issuer):
                return ri.chosen
        elif rid.name == "subject_key_identifier" and ski is not None:
            if hmac.compare_digest(rid.chosen.native, ski):
                return ri.chosen
    return None


def seal_envelope(plaintext: bytes, recipient: x509.Certificate, cipher: str) -> bytes:
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise EnvelopeError("recipient certificate must hold an RSA key", "badAlg")
    if cipher in _LIBRARY_CIPHERS:
        # cryptography builds the same EnvelopedData (v0, issuer and serial, RSA PKCS#1 v1.5 key
        # transport, AES-CBC) in a tenth of asn1crypto's time; Binary: the bytes as they are.
        return (pkcs7.PKCS7EnvelopeBuilder().set_data(plaintext).add_recipient(recipient)
                .set_content_encryption_algorithm(_LIBRARY_CIPHERS[cipher])
                .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    make_cipher, key_len, block = _CIPHERS[cipher]
    key, iv = os.urandom(key_len), os.urandom(block)
    padder = sym_padding.PKCS7(block * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(make_cipher(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    a_cert = ax509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    ktri = acms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": acms.RecipientIdentifier(
                {"issuer_and_serial_number": {"issuer": a_cert.issuer, "serial_number": a_cert.serial_number}}
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": public_key.encrypt(key, asym_padding.PKCS1v15()),
        }
    )
    enveloped = acms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [acms.RecipientInfo(name="ktri", value=ktri)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": cipher, "parameters": core.OctetString(iv)},
                "encrypted_content": ciphertext,
            },
        }
    )
    return acms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def decrypt_envelope(der: bytes, certificate: x509.Certificate, private_key) -> bytes:
    """Decrypt a CMS EnvelopedData addressed to `certificate` (RSA key transport; AES or 3DES CBC).
    For other envelopes than SCEP's (Apple Business Manager's server token). Raises ValueError."""
    from cryptography.hazmat.primitives.asymmetric import padding

    class _Key:
        def decrypt(self, data: bytes) -> bytes:
            return private_key.decrypt(data, padding.PKCS1v15())

    from types import SimpleNamespace

    try:
        return open_envelope(der, SimpleNamespace(certificate=certificate, key=_Key()))[0]
    except EnvelopeError as exc:
        raise ValueError(str(exc)) from None
