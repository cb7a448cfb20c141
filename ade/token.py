"""The server's key pair for Apple Business Manager, and the server token ABM encrypts to it.

In ABM the IT admin creates an MDM server and uploads this server's public key certificate
(`GET /api/v1/ade/public-key`); ABM then offers a server token (`*.p7m`): an S/MIME
EnvelopedData addressed to that certificate, holding the OAuth 1.0a credentials of the
device-enrollment API between "-----BEGIN MESSAGE-----" and "-----END MESSAGE-----".
The key lives in the instance secrets (0600); the credentials are sealed under the data key.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from ipad_mdm.crypto.keys import write_private_key
from ipad_mdm.db import utcnow
from ipad_mdm.files import write_atomic
from mdm import decrypt_envelope

MAX_TOKEN_BYTES = 64 * 1024
_FIELDS = ("consumer_key", "consumer_secret", "access_token", "access_secret", "access_token_expiry")


class TokenError(ValueError):
    """A server token that cannot be used; `code` says why (the API and console word it)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ServerToken:
    consumer_key: str
    consumer_secret: str
    access_token: str
    access_secret: str
    expires_at: dt.datetime

    def sealed(self, fernet) -> str:
        return fernet.encrypt(json.dumps({f: getattr(self, f) for f in _FIELDS[:4]}).encode()).decode()

    @classmethod
    def unseal(cls, fernet, blob: str, expires_at: dt.datetime) -> "ServerToken":
        data = json.loads(fernet.decrypt(blob.encode()))
        return cls(**data, expires_at=expires_at)

    def __repr__(self) -> str:  # never the secrets
        return f"ServerToken(consumer_key={self.consumer_key!r}, expires_at={self.expires_at.isoformat()})"


def keypair(instance_dir: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The key pair ABM encrypts server tokens to; made on first use."""
    cert_path, key_path = instance_dir / "ca" / "ade.pem", instance_dir / "secrets" / "ade.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        return cert, key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipad-mdm Automated Device Enrollment"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Văn phòng Chính phủ")])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    write_private_key(key_path, key)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644, private_parent=False)
    return cert, key


def _envelope_der(data: bytes) -> bytes:
    """The EnvelopedData of a .p7m: S/MIME (headers, base64 body), PEM, or raw DER."""
    if data[:1] == b"\x30":
        return data
    text = data.decode("ascii", errors="replace")
    pem = re.search(r"-----BEGIN PKCS7-----(.*?)-----END PKCS7-----", text, re.S)
    if pem:
        body = pem.group(1)
    else:
        parts = re.split(r"\r?\n\r?\n", text, maxsplit=1)
        body = parts[1] if len(parts) == 2 else text
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except ValueError:
        raise TokenError("token_unreadable", "the file is not a server token (.p7m)") from None


def decrypt(data: bytes, cert: x509.Certificate, key) -> ServerToken:
    if not data or len(data) > MAX_TOKEN_BYTES:
        raise TokenError("token_unreadable", "the file is empty or too large for a server token")
    der = _envelope_der(data)
    try:
        inner = pkcs7.pkcs7_decrypt_der(der, cert, key, [])
    except ValueError:
        # cryptography reads AES envelopes; others (3DES) through mdm's CMS reader.
        try:
            inner = decrypt_envelope(der, cert, key)
        except ValueError:
            raise TokenError("token_not_for_this_server", "the token is not encrypted to this server's key (was another public key "
                                   "uploaded in Apple Business Manager?)") from None
    text = inner.decode("utf-8", errors="replace")
    found = re.search(r"-----BEGIN MESSAGE-----(.*?)-----END MESSAGE-----", text, re.S)
    try:
        fields = json.loads(found.group(1) if found else text.split("\n\n", 1)[-1])
    except (ValueError, AttributeError):
        raise TokenError("token_unreadable", "the decrypted token holds no credentials") from None
    if not isinstance(fields, dict) or any(not isinstance(fields.get(f), str) or not fields.get(f) for f in _FIELDS):
        raise TokenError("token_unreadable", "the token lacks OAuth credentials")
    try:
        expires = dt.datetime.fromisoformat(fields["access_token_expiry"].replace("Z", "+00:00"))
    except ValueError:
        raise TokenError("token_unreadable", "the token's expiry is not a date") from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.timezone.utc)
    if expires <= utcnow():
        raise TokenError("token_expired", f"the token expired on {expires.date().isoformat()}; "
                                          "download a new one from Apple Business Manager")
    return ServerToken(fields["consumer_key"], fields["consumer_secret"], fields["access_token"],
                       fields["access_secret"], expires)
