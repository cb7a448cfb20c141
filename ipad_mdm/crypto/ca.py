"""The project's own certificate authority.

Certificates and CRLs are built with `cryptography` builders; the signature is
made by a KeyHandle, so the CA key may sit on a PKCS#11 token. cryptography can
only sign with an in-memory key, so we let it sign with a throwaway key of the
same type, keep its to-be-signed bytes (which already name our issuer and
algorithm), sign those with the real key and reassemble with asn1crypto.
"""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from asn1crypto import crl as acrl
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import FileKey, KeyHandle


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@functools.lru_cache(maxsize=8)
def _throwaway_key(kind: str, param):
    # Only its signature *algorithm* ends up in the TBS bytes, so one cached key
    # per algorithm family is enough; its signature is discarded.
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(param())  # param: the curve class (hashable, unlike instances)


def _throwaway_for(public_key):
    if isinstance(public_key, rsa.RSAPublicKey):
        return _throwaway_key("rsa", 2048)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        # Any named curve the token supports (P-256, P-384, P-521, ...), not
        # just the two sizes a lookup table knew about.
        return _throwaway_key("ec", type(public_key.curve))
    raise TypeError("unsupported CA key type")


def _check_signature(public_key, signature: bytes, tbs: bytes, what: str) -> None:
    """Verify a signature made through a KeyHandle before anything is issued.

    A token key that does not match the CA certificate (a replaced token, a
    wrong key label, a stale ca.pem) would otherwise produce certificates and
    CRLs that devices reject without a useful error.
    """
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, tbs, padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(signature, tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError(f"the CA key produced a {what} signature that does not verify with its public key") from None


def sign_certificate(builder: x509.CertificateBuilder, key: KeyHandle) -> x509.Certificate:
    if isinstance(key, FileKey):
        return builder.sign(key.private_key, hashes.SHA256())
    public_key = key.public_key()
    draft = builder.sign(_throwaway_for(public_key), hashes.SHA256())
    tbs = draft.tbs_certificate_bytes
    signature = key.sign(tbs, "sha256")
    _check_signature(public_key, signature, tbs, "certificate")
    parsed = ax509.Certificate.load(draft.public_bytes(serialization.Encoding.DER))
    der = ax509.Certificate(
        {
            "tbs_certificate": ax509.TbsCertificate.load(tbs),
            "signature_algorithm": parsed["signature_algorithm"],
            "signature_value": signature,
        }
    ).dump()
    cert = x509.load_der_x509_certificate(der)
    # asn1crypto re-emits the parsed TBS verbatim; make sure it really did.
    if cert.tbs_certificate_bytes != tbs:
        raise RuntimeError("certificate re-assembly changed the signed bytes")
    return cert


def sign_crl(builder: x509.CertificateRevocationListBuilder, key: KeyHandle) -> x509.CertificateRevocationList:
    if isinstance(key, FileKey):
        return builder.sign(key.private_key, hashes.SHA256())
    public_key = key.public_key()
    draft = builder.sign(_throwaway_for(public_key), hashes.SHA256())
    tbs = draft.tbs_certlist_bytes
    signature = key.sign(tbs, "sha256")
    _check_signature(public_key, signature, tbs, "CRL")
    parsed = acrl.CertificateList.load(draft.public_bytes(serialization.Encoding.DER))
    der = acrl.CertificateList(
        {
            "tbs_cert_list": acrl.TbsCertList.load(tbs),
            "signature_algorithm": parsed["signature_algorithm"],
            "signature": signature,
        }
    ).dump()
    crl = x509.load_der_x509_crl(der)
    if crl.tbs_certlist_bytes != tbs:
        raise RuntimeError("CRL re-assembly changed the signed bytes")
    return crl


def random_serial() -> int:
    # 159 bits: positive, unique, unpredictable (CA/B forum asks for >= 64 bits of entropy).
    return secrets.randbits(159) | (1 << 150)


@dataclass(frozen=True)
class RegistrationAuthority:
    """The SCEP RA: a certificate issued by the CA and its key, always a file key (fast)."""

    certificate: x509.Certificate
    key: KeyHandle


@dataclass
class CertificateAuthority:
    certificate: x509.Certificate
    key: KeyHandle
    _verified: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        # The AKI must repeat the CA certificate's own SKI: path builders
        # (OpenSSL, iOS) match on it. Recomputing it from the public key only
        # agrees when the CA certificate used the same SKI method, which an
        # imported CA (or one made by another tool) need not have.
        try:
            ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.certificate.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _base(self, subject: x509.Name, public_key, days: int, serial: int | None = None) -> x509.CertificateBuilder:
        now = utcnow()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial or random_serial())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(self.authority_key_identifier(), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        )

    def issue_device_identity(self, subject: x509.Name, public_key, days: int, serial: int | None = None) -> x509.Certificate:
        """A client-authentication certificate for one device (SCEP enrollment)."""
        return self.issue_client(subject, public_key, days, serial=serial)

    def issue_client(self, subject: x509.Name, public_key, days: int, *, serial: int | None = None,
                     dns_names: tuple[str, ...] = ()) -> x509.Certificate:
        """A client-authentication certificate (device identity, IKEv2 identity); `dns_names`
        go into the SAN (an IKE gateway accepts an FQDN ID only if the certificate confirms it)."""
        builder = (
            self._base(subject, public_key, days, serial)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        )
        if dns_names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), False)
        return sign_certificate(builder, self.key)

    def issue_server(self, hostnames: list[str], days: int = 825) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """A TLS server certificate (the embedded server terminates TLS itself)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sans: list[x509.GeneralName] = []
        for name in dict.fromkeys(hostnames):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
        builder = (
            self._base(subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(sans), False)
        )
        return sign_certificate(builder, self.key), key

    def issue_scep_ra(self, public_key, days: int = 825) -> x509.Certificate:
        """The SCEP registration authority's certificate (RFC 8894 2.1.1): iPads encrypt their request
        to it and it signs the answers, so an enrollment takes one operation of the CA key (the
        identity certificate) instead of three — the CA key may be on a slow USB token."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iPad MDM SCEP RA"),
                             *[a for a in self.certificate.subject if a.oid == NameOID.ORGANIZATION_NAME]])
        builder = (
            self._base(subject, public_key, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), True)
        )
        return sign_certificate(builder, self.key)

    def issue_signer(self, common_name: str, public_key, days: int = 825) -> x509.Certificate:
        """A certificate for the profile-signing key (digital signature only)."""
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                *[a for a in self.certificate.subject if a.oid == NameOID.ORGANIZATION_NAME],
            ]
        )
        builder = (
            self._base(subject, public_key, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        )
        return sign_certificate(builder, self.key)

    def build_crl(self, revoked, next_update_hours: float = 24, number: int = 1, *,
                  backdate_minutes: int = 0) -> x509.CertificateRevocationList:
        """A signed CRL. `revoked`: (serial, revocation time) or (serial, time, x509.ReasonFlags)."""
        now = utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - dt.timedelta(minutes=backdate_minutes))
            .next_update(now + dt.timedelta(hours=next_update_hours))
            .add_extension(x509.CRLNumber(number), False)
            .add_extension(self.authority_key_identifier(), False)
        )
        for entry in revoked:
            serial, when = entry[0], entry[1]
            item = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if len(entry) > 2 and entry[2] is not None:
                item = item.add_extension(x509.CRLReason(entry[2]), False)
            builder = builder.add_revoked_certificate(item.build())
        return sign_crl(builder, self.key)

    def issued_this(self, cert: x509.Certificate, fingerprint: bytes | None = None) -> bool:
        """True when `cert` carries a valid signature by this CA.

        Devices present the same certificate on every check-in: a verified result is
        remembered in a bounded LRU keyed by the SHA-256 of the certificate's DER, large
        enough for the whole fleet (emptying it when full made every device miss at once).
        """
        key = fingerprint or cert.fingerprint(hashes.SHA256())
        with _VERIFIED_LOCK:
            cached = self._verified.get(key)
            if cached is not None:
                self._verified.move_to_end(key)
                return cached
        ok = cert.issuer == self.certificate.subject
        if ok:
            try:
                cert.verify_directly_issued_by(self.certificate)
            except Exception:
                ok = False
        with _VERIFIED_LOCK:
            self._verified[key] = ok
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return ok


VERIFIED_CACHE_SIZE = 65536
_VERIFIED_LOCK = threading.Lock()


def create_ca(common_name: str, organization: str, days: int = 3650, key_size: int = 3072):
    """A new self-signed root (demo CA). Returns (certificate, private key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    return create_ca_for_key(common_name, organization, FileKey(key), days), key


def create_ca_for_key(common_name: str, organization: str, key: KeyHandle, days: int = 3650) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = utcnow()
    pub = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pub)
        .serial_number(random_serial())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), False)
    )
    return sign_certificate(builder, key)
