"""The signer of a device message's Mdm-Signature, for the one shape iPads send, without asn1crypto.

Every check-in and command answer carries a detached CMS SignedData. asn1crypto builds some thirty
objects to read one (about 170 µs of a 200 µs verification; the RSA check is the rest), and that was
the largest part of an idle check-in's CPU. This module walks the DER of exactly this shape:

    ContentInfo { signedData, [0] SignedData { version, digestAlgorithms,
        encapContentInfo { data } (no content: detached), [0] certificates,
        signerInfos { one SignerInfo { v1, issuerAndSerialNumber, digestAlgorithm (SHA-1/2),
            [0] signedAttrs, signatureAlgorithm (RSA PKCS#1 v1.5), signature } } } }

and checks what cms.verify checks: exactly one content-type attribute (data) and one message-digest
attribute, each single-valued; the digest is the content's; the signature over the attributes (as a
SET) verifies with the included certificate named by issuer and serial. Anything else — another
shape, a CRL, unsigned attributes, an ECDSA key, a signature that does not verify, bytes past the
end — gives None, and cms.verify (asn1crypto) decides from scratch: this path can only accept what
passes the cryptographic checks, never refuse. tests/test_cms_fast.py compares the two on generated
and mutated messages.
"""
from __future__ import annotations

import functools
import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _oid(dotted: str) -> bytes:
    """The DER contents of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


_SIGNED_DATA = _oid("1.2.840.113549.1.7.2")
_DATA = _oid("1.2.840.113549.1.7.1")
_CONTENT_TYPE = _oid("1.2.840.113549.1.9.3")
_MESSAGE_DIGEST = _oid("1.2.840.113549.1.9.4")
_DIGESTS = {
    _oid("1.3.14.3.2.26"): (hashlib.sha1, hashes.SHA1),
    _oid("2.16.840.1.101.3.4.2.1"): (hashlib.sha256, hashes.SHA256),
    _oid("2.16.840.1.101.3.4.2.2"): (hashlib.sha384, hashes.SHA384),
    _oid("2.16.840.1.101.3.4.2.3"): (hashlib.sha512, hashes.SHA512),
}
# The two signed attributes read, with the DER tag of their value (OCTET STRING, OBJECT IDENTIFIER).
_ATTRIBUTE_TAGS = {_MESSAGE_DIGEST: 0x04, _CONTENT_TYPE: 0x06}
_RSA = _oid("1.2.840.113549.1.1.1")
# sha*WithRSAEncryption: accepted only with the matching digest algorithm.
_RSA_WITH = {_oid("1.2.840.113549.1.1.5"): hashes.SHA1, _oid("1.2.840.113549.1.1.11"): hashes.SHA256,
             _oid("1.2.840.113549.1.1.12"): hashes.SHA384, _oid("1.2.840.113549.1.1.13"): hashes.SHA512}


class _Shape(Exception):
    """Not the shape this module reads."""


def _tlv(buf: bytes, pos: int, end: int, tag: int | None = None) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the element at pos, within end."""
    if pos + 2 > end:
        raise _Shape
    t = buf[pos]
    if tag is not None and t != tag:
        raise _Shape
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise _Shape  # indefinite or absurd lengths: not DER of this shape
        n = int.from_bytes(buf[pos:pos + count], "big")
        pos += count
    if pos + n > end:
        raise _Shape
    return t, pos, pos + n


def _children(buf: bytes, start: int, end: int):
    pos = start
    while pos < end:
        t, s, e = _tlv(buf, pos, end)
        yield t, s, e, pos
        pos = e


@functools.lru_cache(maxsize=16384)
def _certificate(der: bytes) -> tuple[x509.Certificate, bytes, int, object]:
    """Certificates by their DER, with what matching and verifying read of them (issuer, serial,
    public key): an iPad sends the same identity with every message."""
    cert = x509.load_der_x509_certificate(der)
    return cert, cert.issuer.public_bytes(), cert.serial_number, cert.public_key()


def detached_signer(der: bytes, content: bytes) -> x509.Certificate | None:
    """The certificate whose key signed `content`, or None (cms.verify decides)."""
    try:
        return _signer(der, content)
    except Exception:  # noqa: BLE001 — any surprise (a mangled certificate, an odd key) is the reference's to judge
        return None


def _algorithm(b: bytes, element) -> bytes:
    """The OID of an AlgorithmIdentifier (its parameters absent or NULL; anything else: not this shape)."""
    parts = list(_children(b, element[1], element[2]))
    if not parts or parts[0][0] != 0x06 or len(parts) > 2:
        raise _Shape
    if len(parts) == 2 and b[parts[1][3]:parts[1][2]] != b"\x05\x00":
        raise _Shape
    return b[parts[0][1]:parts[0][2]]


def _signer(b: bytes, content: bytes) -> x509.Certificate:
    _, s, e = _tlv(b, 0, len(b), 0x30)
    if e != len(b):
        raise _Shape
    _, os_, oe = _tlv(b, s, e, 0x06)
    if b[os_:oe] != _SIGNED_DATA:
        raise _Shape
    _, xs, xe = _tlv(b, oe, e, 0xA0)
    if xe != e:
        raise _Shape
    _, sd, sde = _tlv(b, xs, xe, 0x30)
    if sde != xe:
        raise _Shape
    parts = list(_children(b, sd, sde))
    # version, digestAlgorithms, encapContentInfo, [0] certificates, signerInfos: nothing else.
    if [p[0] for p in parts] != [0x02, 0x31, 0x30, 0xA0, 0x31]:
        raise _Shape
    _, es, ee, _ = parts[2]
    encap = list(_children(b, es, ee))
    if len(encap) != 1 or encap[0][0] != 0x06 or b[encap[0][1]:encap[0][2]] != _DATA:
        raise _Shape  # embedded content or another content type: the full path
    certs = [(b[pos:ce], ct) for ct, _cs, ce, pos in _children(b, parts[3][1], parts[3][2])]
    infos = list(_children(b, parts[4][1], parts[4][2]))
    if len(infos) != 1 or infos[0][0] != 0x30:
        raise _Shape
    fields = list(_children(b, infos[0][1], infos[0][2]))
    if [f[0] for f in fields] != [0x02, 0x30, 0x30, 0xA0, 0x30, 0x04] or b[fields[0][1]:fields[0][2]] != b"\x01":
        raise _Shape
    sid = list(_children(b, fields[1][1], fields[1][2]))
    if [f[0] for f in sid] != [0x30, 0x02]:
        raise _Shape
    issuer = b[sid[0][3]:sid[0][2]]
    serial = int.from_bytes(b[sid[1][1]:sid[1][2]], "big", signed=True)
    hashing = _DIGESTS.get(_algorithm(b, fields[2]))
    if hashing is None:
        raise _Shape
    _, attrs_start, attrs_end, attrs_pos = fields[3]
    found: dict[bytes, bytes] = {}  # attribute type -> its one value's contents
    for t, a_s, a_e, _pos in _children(b, attrs_start, attrs_end):
        attr = list(_children(b, a_s, a_e)) if t == 0x30 else None
        if not attr or len(attr) != 2 or attr[0][0] != 0x06 or attr[1][0] != 0x31:
            raise _Shape
        kind = b[attr[0][1]:attr[0][2]]
        if kind not in _ATTRIBUTE_TAGS:
            continue
        values = list(_children(b, attr[1][1], attr[1][2]))
        if len(values) != 1 or kind in found or values[0][0] != _ATTRIBUTE_TAGS[kind]:
            raise _Shape  # repeated, multi-valued or mistyped: the full path refuses it with its reason
        found[kind] = b[values[0][1]:values[0][2]]
    digest = found.get(_MESSAGE_DIGEST)
    if digest is None or found.get(_CONTENT_TYPE) != _DATA \
            or not hmac.compare_digest(digest, hashing[0](content).digest()):
        raise _Shape
    alg = _algorithm(b, fields[4])
    if alg != _RSA and _RSA_WITH.get(alg) is not hashing[1]:
        raise _Shape
    if any(tag != 0x30 for _der, tag in certs):
        raise _Shape  # other certificate choices (attribute certificates, …): the full path
    signer = key = None
    for der, _tag in certs:
        cert, cert_issuer, cert_serial, cert_key = _certificate(der)
        if cert_serial == serial and cert_issuer == issuer:
            signer, key = cert, cert_key
            break
    if signer is None:
        raise _Shape
    if not isinstance(key, rsa.RSAPublicKey):
        raise _Shape
    signed = b"\x31" + b[attrs_pos + 1:attrs_end]  # the attributes as the SET the signature covers
    key.verify(b[fields[5][1]:fields[5][2]], signed, padding.PKCS1v15(), hashing[1]())
    return signer
