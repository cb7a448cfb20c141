"""SCEP protocol messages (RFC 8894), server side, without any web framework.

The HTTP layer maps ``GET ?operation=GetCACaps`` to :data:`CA_CAPS`,
``GetCACert`` to :func:`get_ca_cert_response` and ``PKIOperation`` (POST body,
or GET ``message`` through :func:`decode_get_message`) to
:func:`parse_pki_message` followed by :func:`build_cert_rep` or
:func:`build_failure`. Deciding *whether* to issue (challenge check, renewal
policy, revocation) is the caller's job; this module only proves who signed
what and opens/seals the envelopes (mdm.envelope: CMS EnvelopedData).

The CA key may live on a PKCS#11 token, so the private key is only ever used
through ``ca.key.decrypt`` (key transport) and ``ipad_mdm.crypto.cms.sign``. With
a registration authority (``ra``: a certificate the CA issued and its file key,
sent with the CA by GetCACert) requests are encrypted to the RA and answers
signed by it: the CA key then only signs the identity certificate, one
operation per enrollment instead of three. A request encrypted to the CA itself
(a client that kept the CA certificate alone) is still opened with the CA key.

SCEP attribute OIDs are deliberately *not* registered in asn1crypto's global
maps: other modules may register the same OIDs under other names, and a
silent clash would break lookups. Attributes are matched by dotted OID and
their values decoded from raw DER instead.
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from dataclasses import dataclass

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.ca import CertificateAuthority, RegistrationAuthority

from . import envelope

log = logging.getLogger(__name__)

__all__ = [
    "CA_CAPS",
    "CA_CAPS_CONTENT_TYPE",
    "PKI_MESSAGE_CONTENT_TYPE",
    "MAX_MESSAGE_BYTES",
    "FAIL_INFO",
    "SCEPError",
    "PKIHeader",
    "PKIRequest",
    "get_ca_cert_response",
    "decode_get_message",
    "parse_pki_message",
    "build_cert_rep",
    "build_failure",
]

# SCEPStandard implies AES, POSTPKIOperation and SHA-256 (RFC 8894 3.5.2), but
# older clients (micromdm scepclient, iOS) look for the individual keywords.
CA_CAPS = "\n".join(["AES", "POSTPKIOperation", "Renewal", "SCEPStandard", "SHA-256"]) + "\n"
CA_CAPS_CONTENT_TYPE = "text/plain"
PKI_MESSAGE_CONTENT_TYPE = "application/x-pki-message"
CA_CERT_CONTENT_TYPE = "application/x-x509-ca-cert"
CA_RA_CERT_CONTENT_TYPE = "application/x-x509-ca-ra-cert"

MAX_MESSAGE_BYTES = 256 * 1024

OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"

MESSAGE_TYPES = {
    "3": "CertRep",
    "17": "RenewalReq",
    "18": "UpdateReq",
    "19": "PKCSReq",
    "20": "CertPoll",
    "21": "GetCert",
    "22": "GetCRL",
}
_SUPPORTED_REQUESTS = {"PKCSReq", "RenewalReq"}

PKI_STATUS = {"SUCCESS": "0", "FAILURE": "2", "PENDING": "3"}
FAIL_INFO = {"badAlg": "0", "badMessageCheck": "1", "badRequest": "2", "badTime": "3", "badCertId": "4"}

_NONCE_MIN, _NONCE_MAX = 8, 64
_TRANSACTION_ID_MAX = 256


class SCEPError(ValueError):
    """A PKIMessage that is malformed, unverifiable or not acceptable.

    ``header`` is set once the outer signature has verified: the caller may
    then answer with ``build_failure(exc.header, ca, exc.fail_info)``
    instead of a bare HTTP 400.
    """

    def __init__(self, message: str, fail_info: str = "badRequest", header: "PKIHeader | None" = None):
        super().__init__(message)
        self.fail_info = fail_info
        self.header = header


@dataclass(frozen=True)
class PKIHeader:
    """The verified signed attributes of a request, enough to answer it."""

    message_type: str
    transaction_id: str
    sender_nonce: bytes
    signer_cert: x509.Certificate


@dataclass(frozen=True)
class PKIRequest(PKIHeader):
    """A verified and decrypted PKCSReq/RenewalReq."""

    csr: x509.CertificateSigningRequest
    challenge: str | None
    content_encryption_alg: str
    # True when the outer signer certificate carries a valid signature by our
    # CA (a RenewalReq made with a previously issued identity). Expiry and
    # revocation are still the caller's to check.
    signer_issued_by_ca: bool


# --------------------------------------------------------------------------- GetCACert / GET helpers


def get_ca_cert_response(ca: CertificateAuthority, chain: list[x509.Certificate] | None = None) -> tuple[bytes, str]:
    """Body and Content-Type for GetCACert.

    A lone CA is sent as DER; with ``chain`` (RA or intermediate certificates)
    a degenerate certs-only PKCS#7 is sent (a DER SET, so unordered).
    """
    if not chain:
        return ca.certificate_der, CA_CERT_CONTENT_TYPE
    return _degenerate_certs([ca.certificate, *chain]), CA_RA_CERT_CONTENT_TYPE


_B64_JUNK = re.compile(r"\s+")


def decode_get_message(message: str) -> bytes:
    """Decode the ``message`` query parameter of a GET PKIOperation.

    Tolerates what clients really send: standard or URL-safe alphabet
    (micromdm scepclient 2.1 uses URL-safe), ``+`` turned into a space by
    form decoding, line breaks and missing padding.
    """
    if not isinstance(message, str) or not message:
        raise SCEPError("missing PKIOperation message")
    if len(message) > MAX_MESSAGE_BYTES * 4 // 3 + 16:
        raise SCEPError("PKIOperation message too large")
    text = message.replace(" ", "+")
    text = _B64_JUNK.sub("", text).replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SCEPError("PKIOperation message is not base64") from None


# --------------------------------------------------------------------------- requests


def parse_pki_message(der: bytes, ca: CertificateAuthority, ra: RegistrationAuthority | None = None) -> PKIRequest:
    """Verify, decrypt and parse a PKCSReq/RenewalReq addressed to ``ra`` or ``ca``.

    Raises SCEPError for anything malformed or unverifiable; the exception's
    ``header`` is set when the caller can still answer with a CertRep FAILURE.
    """
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise SCEPError("PKIOperation message must be bytes")
    der = bytes(der)
    if not der:
        raise SCEPError("empty PKIOperation message")
    if len(der) > MAX_MESSAGE_BYTES:
        raise SCEPError(f"PKIOperation message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        header, envelope_der = _verify_request(der)
    except SCEPError:
        raise
    except Exception as exc:  # junk must never escape as anything but SCEPError
        raise SCEPError(f"malformed pkiMessage ({type(exc).__name__})") from None
    try:
        return _open_request(header, envelope_der, ca, ra)
    except SCEPError as exc:
        if exc.header is None:
            exc.header = header
        raise
    except Exception as exc:
        raise SCEPError(f"malformed pkcsPKIEnvelope ({type(exc).__name__})", "badRequest", header) from None


def _verify_request(der: bytes) -> tuple[PKIHeader, bytes]:
    try:
        signed = cms.verify(der)
    except cms.CMSError as exc:
        # Nothing in the message can be trusted, so there is no one to answer.
        raise SCEPError(f"pkiMessage signature: {exc}", "badMessageCheck") from None
    if signed.signed_data["encap_content_info"]["content_type"].native != "data":
        raise SCEPError("pkiMessage content is not id-data")
    attrs = _scep_attributes(signed.signed_attrs)
    raw_type = _attr_string(attrs, OID_MESSAGE_TYPE, "messageType")
    message_type = MESSAGE_TYPES.get(raw_type, f"unknown({raw_type[:8]!r})")
    transaction_id = _attr_string(attrs, OID_TRANSACTION_ID, "transactionID")
    if not 0 < len(transaction_id) <= _TRANSACTION_ID_MAX or not transaction_id.isprintable():
        # It ends up in logs and the database; RFC 8894 makes it a PrintableString anyway.
        raise SCEPError("transactionID empty, too long or not printable")
    sender_nonce = _attr_octets(attrs, OID_SENDER_NONCE, "senderNonce")
    if not _NONCE_MIN <= len(sender_nonce) <= _NONCE_MAX:
        raise SCEPError("senderNonce has an unexpected length")
    header = PKIHeader(message_type, transaction_id, sender_nonce, signed.signer)
    if message_type not in _SUPPORTED_REQUESTS:
        raise SCEPError(f"unsupported messageType {message_type}", "badRequest", header)
    if not isinstance(signed.signer.public_key(), rsa.RSAPublicKey):
        # The CertRep must be encrypted to this certificate with RSA key transport.
        raise SCEPError("signer certificate must hold an RSA key", "badAlg", header)
    return header, signed.content


def _open_request(header: PKIHeader, envelope_der: bytes, ca: CertificateAuthority,
                  ra: RegistrationAuthority | None) -> PKIRequest:
    try:
        plaintext, alg = envelope.open_envelope(envelope_der, *((ra, ca) if ra is not None else (ca,)))
    except envelope.EnvelopeError as exc:
        raise SCEPError(str(exc), exc.fail_info, header) from None
    try:
        csr = x509.load_der_x509_csr(plaintext)
        csr.public_key()  # unsupported key types fail here rather than in the caller
        signature_ok = csr.is_signature_valid
    except Exception:
        raise SCEPError("pkcsPKIEnvelope does not hold a valid PKCS#10 request", "badRequest", header) from None
    if not signature_ok:
        raise SCEPError("PKCS#10 request signature does not verify", "badMessageCheck", header)
    challenge = _challenge(csr, header)
    return PKIRequest(
        message_type=header.message_type,
        transaction_id=header.transaction_id,
        sender_nonce=header.sender_nonce,
        signer_cert=header.signer_cert,
        csr=csr,
        challenge=challenge,
        content_encryption_alg=alg,
        signer_issued_by_ca=ca.issued_this(header.signer_cert),
    )


def _challenge(csr: x509.CertificateSigningRequest, header: PKIHeader) -> str | None:
    try:
        attr = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    except x509.AttributeNotFound:
        return None
    except Exception:
        raise SCEPError("unreadable challengePassword", "badRequest", header) from None
    try:
        return attr.value.decode("utf-8")
    except UnicodeDecodeError:
        raise SCEPError("challengePassword is not UTF-8", "badRequest", header) from None


def _scep_attributes(signed_attrs) -> dict[str, bytes]:
    """The SCEP signed attributes, dotted OID -> DER of the single value."""
    if signed_attrs is None:
        raise SCEPError("pkiMessage has no signed attributes")
    wanted = {OID_MESSAGE_TYPE, OID_PKI_STATUS, OID_FAIL_INFO, OID_SENDER_NONCE, OID_RECIPIENT_NONCE, OID_TRANSACTION_ID}
    found: dict[str, bytes] = {}
    for attr in signed_attrs:
        oid = attr["type"].dotted
        if oid not in wanted:
            continue
        values = attr["values"]
        if oid in found or len(values) != 1:
            raise SCEPError(f"SCEP attribute {oid} must occur once with one value")
        found[oid] = values[0].dump()
    return found


def _attr_string(attrs: dict[str, bytes], oid: str, name: str) -> str:
    raw = attrs.get(oid)
    if raw is None:
        raise SCEPError(f"missing {name} attribute")
    value = core.load(raw, strict=True)
    if not isinstance(value, (core.PrintableString, core.UTF8String, core.IA5String)):
        raise SCEPError(f"{name} is not a string")
    return value.native


def _attr_octets(attrs: dict[str, bytes], oid: str, name: str) -> bytes:
    raw = attrs.get(oid)
    if raw is None:
        raise SCEPError(f"missing {name} attribute")
    value = core.load(raw, strict=True)
    if not isinstance(value, core.OctetString):
        raise SCEPError(f"{name} is not an OCTET STRING")
    return value.native


# --------------------------------------------------------------------------- responses


def build_cert_rep(
    request: PKIRequest,
    ca: CertificateAuthority,
    issued_cert: x509.Certificate,
    *,
    cipher: str | None = None,
    ra: RegistrationAuthority | None = None,
) -> bytes:
    """CertRep SUCCESS carrying ``issued_cert``, encrypted to the requester.

    The envelope uses AES-256-CBC when the request came with AES (clients that
    read our caps do) and 3DES otherwise; single DES is never sent back.
    """
    if cipher is None:
        cipher = "aes256_cbc" if request.content_encryption_alg.startswith("aes") else "tripledes_3key"
    if cipher not in ("aes128_cbc", "aes256_cbc", "tripledes_3key"):
        raise ValueError(f"unsupported CertRep cipher {cipher}")
    degenerate = _degenerate_certs([issued_cert])
    sealed = envelope.seal_envelope(degenerate, request.signer_cert, cipher)
    return _sign_cert_rep(request, ra or ca, "SUCCESS", envelope=sealed)


def build_failure(request: PKIHeader, ca: CertificateAuthority, fail_info: str,
                  ra: RegistrationAuthority | None = None) -> bytes:
    """CertRep FAILURE with ``fail_info`` (a FAIL_INFO name such as 'badRequest')."""
    if fail_info not in FAIL_INFO:
        raise ValueError(f"unknown failInfo {fail_info!r}")
    return _sign_cert_rep(request, ra or ca, "FAILURE", fail_info=fail_info)


def _sign_cert_rep(request: PKIHeader, signer: CertificateAuthority | RegistrationAuthority, status: str, *,
                   envelope: bytes | None = None, fail_info: str | None = None) -> bytes:
    attrs = [
        _attr(OID_MESSAGE_TYPE, core.PrintableString("3")),
        _attr(OID_PKI_STATUS, core.PrintableString(PKI_STATUS[status])),
        _attr(OID_TRANSACTION_ID, _string_value(request.transaction_id)),
        _attr(OID_RECIPIENT_NONCE, core.OctetString(request.sender_nonce)),
        _attr(OID_SENDER_NONCE, core.OctetString(os.urandom(16))),
    ]
    if fail_info is not None:
        attrs.append(_attr(OID_FAIL_INFO, core.PrintableString(FAIL_INFO[fail_info])))
    if envelope is None:
        # RFC 8894 3.3.2: no pkcsPKIEnvelope on FAILURE/PENDING, so eContent is
        # absent and the messageDigest covers the empty string.
        return cms.sign(b"", signer.certificate, signer.key, detached=True, signed_attrs_extra=attrs)
    return cms.sign(envelope, signer.certificate, signer.key, signed_attrs_extra=attrs)


def _attr(oid: str, value: core.Asn1Value) -> dict:
    return {"type": oid, "values": [value]}


def _string_value(text: str) -> core.Asn1Value:
    # Echo the transactionID in PrintableString when it fits (RFC 8894), else UTF8String.
    try:
        return core.PrintableString(text)
    except ValueError:
        return core.UTF8String(text)


def _degenerate_certs(certs: list[x509.Certificate]) -> bytes:
    signed_data = acms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "certificates": [ax509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in certs],
            "signer_infos": [],
        }
    )
    return acms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
