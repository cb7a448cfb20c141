"""Certificate payloads: com.apple.security.root / .pkcs1 / .pkcs12."""

from __future__ import annotations

import functools
from typing import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import pkcs12


from .spec import Key, _PayloadSpec, _b, _fail, _s


# --------------------------------------------------------------------------
# Certificates: com.apple.security.root / .pkcs1 / .pkcs12
# --------------------------------------------------------------------------


def _load_der(value: bytes) -> x509.Certificate:
    if value.lstrip().startswith(b"-----BEGIN"):
        raise ValueError("is PEM; pass the DER encoding (cert.public_bytes(Encoding.DER))")
    try:
        return x509.load_der_x509_certificate(value)
    except ValueError as exc:
        raise ValueError(f"is not a DER-encoded X.509 certificate ({exc})") from None


def _cached(check: Callable[[bytes], str | None]) -> Callable[[bytes], str | None]:
    """A check is a pure function of the bytes, asked about the same CA certificate in every profile
    the server signs (parsing it and verifying its signature each time)."""
    remembered = functools.lru_cache(maxsize=64)(check)

    def checked(value) -> str | None:
        return remembered(bytes(value))

    return checked


@_cached
def _check_der_certificate(value: bytes) -> str | None:
    try:
        _load_der(value)
    except ValueError as exc:
        return str(exc)
    return None


@_cached
def _check_root_certificate(value: bytes) -> str | None:
    # Local rule: a "root" payload makes the device trust everything the
    # certificate signs, so it must really be a self-signed CA certificate.
    try:
        cert = _load_der(value)
    except ValueError as exc:
        return str(exc)
    if cert.subject != cert.issuer:
        return "is not a root certificate (subject and issuer differ); use com.apple.security.pkcs1"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and not constraints.ca:
        return "is not a CA certificate (basicConstraints CA is false)"
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return "is not self-signed (its signature does not verify with its own key)"
    return None


def _cert_keys(check: Callable[[bytes], str | None]) -> tuple[Key, ...]:
    return (
        _s("PayloadCertificateFileName"),
        Key("PayloadContent", "data", required=True, check=check),
    )


_ROOT = _PayloadSpec("com.apple.security.root", "Root certificate", _cert_keys(_check_root_certificate))
_PKCS1 = _PayloadSpec(
    "com.apple.security.pkcs1", "PKCS#1 certificate", _cert_keys(_check_der_certificate)
)


def _pkcs12_rule(label: str, d: dict) -> None:
    # Without a password the device prompts the user, so we cannot check more.
    if "Password" not in d:
        return
    try:
        key, cert, _extra = pkcs12.load_key_and_certificates(
            d["PayloadContent"], d["Password"].encode("utf-8")
        )
    except (ValueError, TypeError):
        _fail(
            label,
            "PayloadContent",
            "could not be opened with Password (wrong password or not PKCS#12 data)",
        )
        return
    if key is None or cert is None:
        # Apple: "Password-protected identity certificate" - key and certificate.
        _fail(label, "PayloadContent", "must contain a private key and its certificate")


_PKCS12 = _PayloadSpec(
    "com.apple.security.pkcs12",
    "PKCS#12",
    (
        _s("PayloadCertificateFileName"),
        Key("PayloadContent", "data", required=True, secret=True),
        _s("Password", secret=True),
        _b("AllowAllAppsAccess"),
        _b("KeyIsExtractable"),
    ),
    rules=(_pkcs12_rule,),
)

