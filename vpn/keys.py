"""WireGuard keys: X25519 through `cryptography`, in WireGuard's base64 form.

No subprocess (`wg genkey`) on the request path: it would need wireguard-tools
on every app server and fork per enrollment. Tests check the result against
`wg pubkey`.
"""
from __future__ import annotations

import base64
import fcntl
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from ipad_mdm.crypto.keys import write_secret_file

SERVER_KEY_FILE = "wireguard-server.key"
_cache: dict[Path, str] = {}
_cache_lock = threading.Lock()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _clamp(raw: bytes) -> bytes:
    # Curve25519 clamping, as `wg genkey` does: the scalar is clamped on use
    # anyway, but storing the canonical form keeps our keys byte-identical to
    # what WireGuard's own tools would produce.
    k = bytearray(raw)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def generate_keypair() -> tuple[str, str]:
    """(private, public) as base64 of the raw 32 bytes."""
    raw = _clamp(X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    return _b64(raw), public_from_private(_b64(raw))


def public_from_private(private_b64: str) -> str:
    raw = base64.b64decode(private_b64, validate=True)
    if len(raw) != 32:
        raise ValueError("a WireGuard private key is 32 bytes")
    key = X25519PrivateKey.from_private_bytes(raw)
    return _b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def generate_psk() -> str:
    return _b64(os.urandom(32))


def server_private_key(secrets_dir: Path) -> str:
    """The server's private key, created once in the instance secrets dir (0600).

    Several workers may start at once: a file lock makes exactly one of them
    create the key and the others read it, so every worker (and the config
    file) uses the same key.
    """
    path = secrets_dir / SERVER_KEY_FILE
    with _cache_lock:
        if path in _cache:
            return _cache[path]
        secrets_dir.mkdir(parents=True, exist_ok=True)
        # Every file in secrets/ is 0600, the lock file included.
        with os.fdopen(os.open(secrets_dir / ".wireguard-key.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                private, _public = generate_keypair()
                write_secret_file(path, private.encode("ascii") + b"\n")
            value = path.read_text().strip()
        public_from_private(value)  # refuse a damaged file here, not in wg
        _cache[path] = value
        return value


def server_public_key(secrets_dir: Path) -> str:
    return public_from_private(server_private_key(secrets_dir))
