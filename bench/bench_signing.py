"""Signing throughput: in-memory key (FileKey) vs a PKCS#11 token (SoftHSM2).

Prints figures only. SoftHSM2 is software, so the token figures show the cost
of the PKCS#11 path (session, attribute marshalling, module calls); a real USB
token is typically far slower (RSA-2048 on a smart-card chip: a few signatures
per second), so measure on the office's hardware before sizing anything.

    .venv/bin/python bench/bench_signing.py [--seconds 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from ipad_mdm.crypto import cms  # noqa: E402
from ipad_mdm.crypto.ca import create_ca  # noqa: E402
from ipad_mdm.crypto.ca import CertificateAuthority  # noqa: E402
from ipad_mdm.crypto.keys import FileKey  # noqa: E402
from ipad_mdm.crypto.pkcs11_keys import Pkcs11Key  # noqa: E402
from tests.softhsm import SoftHsm, SoftHsmUnavailable  # noqa: E402


def rate(fn, seconds: float) -> tuple[float, int]:
    fn()  # warm-up: opens the token session / loads the module outside the timing
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        fn()
        n += 1
    return n / (time.perf_counter() - start), n


def profile_of(size: int) -> bytes:
    # A plist padded to the requested size, like a Wi-Fi/VPN profile with certificates.
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict><key>Pad</key><string>'
    tail = b"</string></dict></plist>\n"
    return head + b"A" * (size - len(head) - len(tail)) + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    data = os.urandom(1024)  # ~ the size of a TBSCertificate / signed attributes
    profile = profile_of(10 * 1024)
    ca_cert, ca_key = create_ca("Bench CA", "Bench", key_size=2048)
    ca = CertificateAuthority(ca_cert, FileKey(ca_key))

    keys: dict[str, object] = {
        "FileKey RSA-2048": FileKey(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "FileKey EC P-256": FileKey(ec.generate_private_key(ec.SECP256R1())),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-softhsm-"))
    try:
        try:
            store = SoftHsm(tmp, ["bench"])
            store.activate()
            token = store.token("bench")
            keys["Pkcs11Key RSA-2048 (SoftHSM2)"] = Pkcs11Key(token.generate_rsa("bench-rsa"))
            keys["Pkcs11Key EC P-256 (SoftHSM2)"] = Pkcs11Key(token.generate_ec("bench-ec"))
        except SoftHsmUnavailable as exc:
            print(f"# SoftHSM2 not available ({exc}); token figures skipped")

        print(f"# {args.seconds:g} s per measurement; higher is better")
        print(f"{'key':34} {'raw sign/s':>12} {'CMS sign 10 KB/s':>18}")
        for label, key in keys.items():
            signer = ca.issue_signer("Bench signer", key.public_key())
            raw, _ = rate(lambda: key.sign(data), args.seconds)
            signed, _ = rate(lambda: cms.sign(profile, signer, key), args.seconds)
            print(f"{label:34} {raw:12.1f} {signed:18.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
