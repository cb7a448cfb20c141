"""CMS SignedData (RFC 5652): sign with any KeyHandle, verify signatures.

cryptography's PKCS7 builder needs an in-memory key and cannot verify: profiles
are signed by a token-held key (SignedData written as DER here), and device
messages (Mdm-Signature) and SCEP requests are verified with asn1crypto.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .keys import KeyHandle

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_CRYPTO_HASH = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
MAX_CMS_BYTES = 1024 * 1024


class CMSError(ValueError):
    """A CMS structure that is malformed or whose signature does not verify."""


def _public_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# ------------------------------------------------------------------ signing, written as DER
# Every enrollment signs three SignedData (its profile, its VPN profile, the SCEP answer), and
# asn1crypto built each from dicts in about 2.4 ms, the RSA-3072 signature being 0.9 ms of it. The
# structure is fixed, so it is written directly: the algorithm identifiers and the content-type
# attribute are asn1crypto's own encodings (made once), the rest is plain TLV. The bytes are the
# same asn1crypto wrote (tests/test_cms_sign.py builds both and compares them).

def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, contents: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(contents)) + contents


def _der_integer(n: int) -> bytes:
    return _tlv(0x02, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


@functools.lru_cache(maxsize=None)
def _fixed(kind: str, name: str) -> bytes:
    """asn1crypto's DER of the small fixed parts, once."""
    if kind == "digest":
        return algos.DigestAlgorithm({"algorithm": name}).dump()
    if kind == "signature":
        return algos.SignedDigestAlgorithm({"algorithm": name}).dump()
    if kind == "content_type":
        return cms.ContentType(name).dump()
    if kind == "content_type_attribute":
        return cms.CMSAttribute({"type": "content_type", "values": [name]}).dump()
    raise ValueError(f"no fixed DER part {kind!r}")


_SIGNING_TIME = bytes.fromhex("06092a864886f70d010905")  # OID 1.2.840.113549.1.9.5
_MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")  # OID 1.2.840.113549.1.9.4


def _attribute(oid_der: bytes, value_der: bytes) -> bytes:
    return _tlv(0x30, oid_der + _tlv(0x31, value_der))


def sign(
    content: bytes,
    signer_cert: x509.Certificate,
    key: KeyHandle,
    *,
    detached: bool = False,
    extra_certs: list[x509.Certificate] | None = None,
    hash_name: str = "sha256",
    signed_attrs_extra: list[dict] | None = None,
    content_type: str = "data",
) -> bytes:
    """Return DER ContentInfo(SignedData) over `content` with signed attributes."""
    if hash_name not in _DIGESTS:
        raise ValueError(f"unsupported digest {hash_name}")
    pub = key.public_key()
    if _public_der(signer_cert.public_key()) != _public_der(pub):
        # Otherwise we would emit a signature no verifier accepts (e.g. a
        # renewed token key with the old signer certificate still configured).
        raise ValueError("signer certificate does not belong to the signing key")
    now = dt.datetime.now(dt.timezone.utc)
    attrs = [
        _fixed("content_type_attribute", content_type),
        _attribute(_SIGNING_TIME, _tlv(0x17, now.strftime("%y%m%d%H%M%SZ").encode("ascii"))),
        _attribute(_MESSAGE_DIGEST, _tlv(0x04, _DIGESTS[hash_name](content).digest())),
    ]
    attrs.extend(cms.CMSAttribute(extra).dump() for extra in signed_attrs_extra or [])
    # DER orders a SET OF (attributes, certificates) by the members' encodings; the signature covers
    # the attributes with the SET tag (RFC 5652 5.4), the SignerInfo carries them under [0] IMPLICIT.
    attrs_body = b"".join(sorted(attrs))
    signature = key.sign(_tlv(0x31, attrs_body), hash_name)
    sig_alg = "rsassa_pkcs1v15" if isinstance(pub, rsa.RSAPublicKey) else f"{hash_name}_ecdsa"
    digest_alg = _fixed("digest", hash_name)
    signer_info = _tlv(0x30, b"".join((
        _der_integer(1),
        _tlv(0x30, signer_cert.issuer.public_bytes() + _der_integer(signer_cert.serial_number)),
        digest_alg,
        _tlv(0xA0, attrs_body),
        _fixed("signature", sig_alg),
        _tlv(0x04, signature),
    )))
    certs = b"".join(sorted(c.public_bytes(serialization.Encoding.DER) for c in [signer_cert, *(extra_certs or [])]))
    encap = _fixed("content_type", content_type)
    if not detached:
        encap += _tlv(0xA0, _tlv(0x04, content))
    signed_data = _tlv(0x30, b"".join((
        # RFC 5652 5.1: v3 when eContentType is not id-data (issuerAndSerialNumber, no v2 parts).
        _der_integer(1 if content_type == "data" else 3),
        _tlv(0x31, digest_alg),
        _tlv(0x30, encap),
        _tlv(0xA0, certs),
        _tlv(0x31, signer_info),
    )))
    return _tlv(0x30, _fixed("content_type", "signed_data") + _tlv(0xA0, signed_data))


class VerifiedSignature:
    """What a verified SignedData tells: the content and the signer's certificate."""

    def __init__(self, content: bytes, signer: x509.Certificate, certificates: list[x509.Certificate], signed_attrs: cms.CMSAttributes | None, signed_data: cms.SignedData):
        self.content = content
        self.signer = signer
        self.certificates = certificates
        self.signed_attrs = signed_attrs
        self.signed_data = signed_data

    def attribute(self, name: str):
        if self.signed_attrs is None:
            return None
        for attr in self.signed_attrs:
            if attr["type"].native == name or attr["type"].dotted == name:
                return attr["values"][0]
        return None


def parse_signed_data(der: bytes) -> cms.SignedData:
    if not der or len(der) > MAX_CMS_BYTES:
        raise CMSError("CMS structure empty or too large")
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise CMSError("not a CMS SignedData structure")
        signed_data = info["content"]
        # Touch the parts every caller needs; deeper junk fails later inside the
        # callers' own try blocks (a full .native parse would cost ~2 ms per message).
        signed_data["encap_content_info"]["content_type"].native  # noqa: B018
        signed_data["signer_infos"].contents  # noqa: B018
        return signed_data
    except CMSError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError/KeyError on junk
        raise CMSError(f"malformed CMS: {type(exc).__name__}") from None


def verify(der: bytes, detached_content: bytes | None = None) -> VerifiedSignature:
    """Verify the (single) signer of a SignedData; returns content and signer.

    This proves the content was signed by the key of the embedded certificate.
    Whether that certificate is trusted (issued by our CA, not revoked, bound to
    the right device) is the caller's decision.
    """
    signed_data = parse_signed_data(der)
    try:
        encap = signed_data["encap_content_info"]
        inner = encap["content"]
        embedded = None
        # Absent optional parts are Void: checked by type, since .native of a part converts all of
        # it (the signed attributes' .native alone cost a third of a check-in's verification).
        native = None if isinstance(inner, core.Void) else inner.native
        if native is not None:
            embedded = native if isinstance(native, bytes) else inner.contents
        content = detached_content
        if content is None:
            if embedded is None:
                raise CMSError("no content to verify")
            content = embedded
        elif embedded is not None and embedded != content:
            # Which of the two would the caller act on? Refuse the ambiguity.
            raise CMSError("detached content given for a SignedData that embeds different content")
        certs = []
        for choice in signed_data["certificates"] or []:
            if choice.name == "certificate":
                certs.append(x509.load_der_x509_certificate(choice.chosen.dump()))
        infos = signed_data["signer_infos"]
        if len(infos) != 1:
            raise CMSError("expected exactly one signer")
        info = infos[0]
        signer = _find_signer(info["sid"], certs)
        if signer is None:
            raise CMSError("signer certificate not included")
        hash_name = info["digest_algorithm"]["algorithm"].native
        if hash_name not in _DIGESTS:
            raise CMSError(f"unsupported digest {hash_name}")
        signed_attrs = info["signed_attrs"]
        if not isinstance(signed_attrs, core.Void) and len(signed_attrs):
            # RFC 5652 5.3: exactly one content-type attribute matching
            # eContentType and exactly one message-digest, each single-valued;
            # anything else could let an attacker choose which value we read.
            digests = _single_attr(signed_attrs, "message_digest")
            types = _single_attr(signed_attrs, "content_type")
            if digests is None or types is None:
                raise CMSError("signed attributes need exactly one content-type and one message-digest")
            if types.native != encap["content_type"].native:
                raise CMSError("content-type attribute does not match the encapsulated content type")
            if not hmac.compare_digest(digests.native, _DIGESTS[hash_name](content).digest()):
                raise CMSError("message digest mismatch")
            to_verify = _attrs_as_set(signed_attrs)
        else:
            signed_attrs = None
            to_verify = content
        _verify_raw(signer.public_key(), info["signature"].native, to_verify, hash_name, info["signature_algorithm"])
    except CMSError:
        raise
    except Exception as exc:
        raise CMSError(f"malformed CMS: {type(exc).__name__}") from None
    return VerifiedSignature(content, signer, certs, signed_attrs, signed_data)


def _single_attr(signed_attrs: cms.CMSAttributes, name: str):
    """The value of the attribute `name` if it occurs exactly once with one value, else None."""
    found = [attr for attr in signed_attrs if attr["type"].native == name]
    if len(found) != 1 or len(found[0]["values"]) != 1:
        return None
    return found[0]["values"][0]


def _find_signer(sid: cms.SignerIdentifier, certs: list[x509.Certificate]) -> x509.Certificate | None:
    """The certificate named by a SignerIdentifier (issuerAndSerialNumber or subjectKeyIdentifier)."""
    if sid.name == "issuer_and_serial_number":
        want_serial = sid.chosen["serial_number"].native
        want_issuer = sid.chosen["issuer"].dump()
        for c in certs:
            # cryptography's own fields: re-parsing each certificate with asn1crypto cost more than
            # the RSA verification on every check-in.
            if c.serial_number == want_serial and c.issuer.public_bytes() == want_issuer:
                return c
        return None
    if sid.name == "subject_key_identifier":
        want = sid.chosen.native
        for c in certs:
            try:
                ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == want:
                return c
        return None
    raise CMSError("unsupported signer identifier")


def _attrs_as_set(signed_attrs: cms.CMSAttributes) -> bytes:
    # The signature covers the DER of the attributes with an explicit SET OF tag (0x31),
    # not the [0] IMPLICIT tag they carry inside SignerInfo.
    encoded = signed_attrs.dump()
    return b"\x31" + encoded[1:]


def _verify_raw(public_key, signature: bytes, data: bytes, hash_name: str, sig_alg: algos.SignedDigestAlgorithm) -> None:
    h = _CRYPTO_HASH[hash_name]()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if sig_alg["algorithm"].native == "rsassa_pss":
                params = sig_alg["parameters"]
                public_key.verify(
                    signature, data,
                    padding.PSS(mgf=padding.MGF1(_CRYPTO_HASH[params["hash_algorithm"]["algorithm"].native]()), salt_length=params["salt_length"].native),
                    _CRYPTO_HASH[params["hash_algorithm"]["algorithm"].native](),
                )
            else:
                public_key.verify(signature, data, padding.PKCS1v15(), h)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(h))
        else:
            raise CMSError("unsupported signer key type")
    except InvalidSignature:
        raise CMSError("signature does not verify") from None
