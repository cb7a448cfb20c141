"""Private-key handles: a PEM file (embedded default) or a key on a PKCS#11 token.

Callers never touch key material: they ask a handle to sign or to decrypt.
That is what lets the office keep its signing and CA keys on USB tokens.
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..config import Pkcs11Settings

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512, "sha1": hashes.SHA1}


class KeyHandle:
    """A private key that can sign (RSA PKCS#1 v1.5 or ECDSA) and RSA-decrypt."""

    def public_key(self):
        raise NotImplementedError

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        raise NotImplementedError

    def decrypt(self, ciphertext: bytes) -> bytes:
        """RSA PKCS#1 v1.5 decryption (what SCEP and CMS key transport use)."""
        raise NotImplementedError

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.public_key(), rsa.RSAPublicKey)

    def __repr__(self) -> str:  # never print key material
        return f"<{type(self).__name__}>"


class FileKey(KeyHandle):
    def __init__(self, private_key):
        self._key = private_key

    @classmethod
    def load(cls, path: str | os.PathLike, *, own: bool = False) -> "FileKey":
        """`own`: a key in the instance's own 0600 secrets folder, which this server wrote (or the
        operator put there): its RSA consistency check is skipped, as cryptography allows for keys from
        a trusted source — it cost ~75 ms per 3072-bit key at every worker start and CLI command."""
        data = Path(path).read_bytes()
        return cls(serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=own))

    def public_key(self):
        return self._key.public_key()

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        h = _HASHES[hash_name]()
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), h)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(h))
        raise TypeError("unsupported key type")

    def decrypt(self, ciphertext: bytes) -> bytes:
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise TypeError("decryption needs an RSA key")
        return self._key.decrypt(ciphertext, padding.PKCS1v15())

    @property
    def private_key(self):
        """The cryptography key object, for libraries that need one (TLS contexts)."""
        return self._key


def load_key(path: str | os.PathLike | None = None, pkcs11_settings: Pkcs11Settings | None = None) -> KeyHandle:
    if pkcs11_settings is not None:
        from .pkcs11_keys import Pkcs11Key

        return Pkcs11Key(pkcs11_settings)
    if path is None:
        raise ValueError("no key path or PKCS#11 settings")
    return FileKey.load(path)


def write_private_key(path: Path, key) -> None:
    """Write a PEM private key with 0600 permissions from the first byte."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret_file(path, pem)


def write_secret_file(path: Path, data: bytes) -> None:
    """0600, in a 0700 folder, written atomically (ipad_mdm.files)."""
    from ipad_mdm.files import write_atomic

    write_atomic(path, data)
