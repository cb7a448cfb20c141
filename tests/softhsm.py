"""A real SoftHSM2 token store for tests (and the signing benchmark).

Design constraints, and how this module meets them:

* SoftHSM2 reads ``SOFTHSM2_CONF`` (and scans its token directory) only in
  C_Initialize, and python-pkcs11 initialises a module once per process and
  caches it. Tokens initialised later by ``softhsm2-util`` are invisible to an
  already-initialised process. So one :class:`SoftHsm` store is created per
  test session, all its tokens are initialised *before* the module is first
  loaded, and ``SOFTHSM2_CONF`` is set in ``os.environ`` for the whole process.
* PKCS#11 login state is per process and token: a second login fails with
  CKR_USER_ALREADY_LOGGED_IN, and closing a logged-in session logs out every
  other session of the process (including the ones ``Pkcs11Key`` uses). So keys
  are generated, and their attributes inspected, in a short-lived child Python
  process; SoftHSM's file object store makes new objects visible to the test
  process at its next object search.
* Tokens that must never have been logged into by the test process (wrong-PIN
  tests) are separate tokens of the same store.

Keys are generated ON the token with python-pkcs11: private keys are
CKA_SENSITIVE, not CKA_EXTRACTABLE and CKA_PRIVATE, and share a random CKA_ID
with their public key, like keys made by pkcs11-tool on a USB token.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ipad_mdm.config import Pkcs11Settings

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
    "/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so",
)
DEFAULT_SO_PIN = "so-pin-7531"
DEFAULT_PIN = "user-pin-2468"
# The child process gets the PIN through this variable, not argv (visible in ps).
_PIN_ENV = "IPAD_MDM_TEST_SOFTHSM_PIN"


class SoftHsmUnavailable(RuntimeError):
    """softhsm2-util or the SoftHSM2 module is not installed."""


def find_module() -> str | None:
    explicit = os.environ.get("SOFTHSM2_MODULE")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((m for m in MODULE_CANDIDATES if Path(m).exists()), None)


@dataclass(frozen=True)
class SoftHsmToken:
    """One initialised token of a :class:`SoftHsm` store."""

    module: str
    token_label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)
    conf_path: Path = field(default=None)

    def settings(self, key_label: str, **overrides) -> Pkcs11Settings:
        """Pkcs11Settings for a key on this token (literal PIN unless overridden)."""
        values = {"pin": self.pin, **overrides}
        return Pkcs11Settings(module=self.module, token_label=self.token_label, key_label=key_label, **values)

    def generate_rsa(self, label: str, bits: int = 2048) -> Pkcs11Settings:
        """Generate an RSA key pair on the token; return settings to use it."""
        self._run_child("generate", label=label, kind="rsa", bits=bits)
        return self.settings(label)

    def generate_ec(self, label: str, curve: str = "secp256r1") -> Pkcs11Settings:
        """Generate an EC key pair (default P-256) on the token; return settings to use it."""
        self._run_child("generate", label=label, kind="ec", curve=curve)
        return self.settings(label)

    def store_certificate(self, label: str, der: bytes, key_id: str = "") -> dict:
        """Put an X.509 certificate object on the token (as a CA's enrollment tool does)."""
        return self._run_child("store_certificate", label=label, der=der.hex(), key_id=key_id)

    def private_key_report(self, label: str) -> dict:
        """What the token tells about a private key: flags, and which secret attributes it refused."""
        return self._run_child("inspect", label=label)

    def _run_child(self, action: str, **params) -> dict:
        env = dict(os.environ, SOFTHSM2_CONF=str(self.conf_path), **{_PIN_ENV: self.pin})
        request = json.dumps({"action": action, "module": self.module, "token": self.token_label, **params})
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_SOURCE, request],
            env=env, capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"SoftHSM helper '{action}' failed on token {self.token_label!r}: {proc.stderr.strip()[-2000:]}")
        return json.loads(proc.stdout or "{}")


class SoftHsm:
    """A private SoftHSM2 configuration and token directory with several tokens."""

    def __init__(self, root: Path, token_labels: Iterable[str], *, module: str | None = None,
                 pin: str = DEFAULT_PIN, so_pin: str = DEFAULT_SO_PIN):
        self.module = module or find_module()
        if not self.module:
            raise SoftHsmUnavailable("SoftHSM2 module (libsofthsm2.so) not found; set SOFTHSM2_MODULE")
        self.util = shutil.which("softhsm2-util")
        if not self.util:
            raise SoftHsmUnavailable("softhsm2-util not found")
        self.root = Path(root)
        self.token_dir = self.root / "tokens"
        self.conf_path = self.root / "softhsm2.conf"
        self.pin, self.so_pin = pin, so_pin
        self.labels = list(dict.fromkeys(token_labels))
        self._create()

    def _create(self) -> None:
        self.token_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            f"directories.tokendir = {self.token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
            "slots.mechanisms = ALL\n"
            # The default; stated because the fork test exercises the path where
            # the module keeps the parent's state and the child must re-initialise.
            "library.reset_on_fork = false\n"
        )
        env = dict(os.environ, SOFTHSM2_CONF=str(self.conf_path))
        for label in self.labels:
            subprocess.run(
                [self.util, "--init-token", "--free", "--label", label, "--so-pin", self.so_pin, "--pin", self.pin],
                env=env, check=True, capture_output=True, timeout=60,
            )

    def activate(self) -> None:
        """Point this process's SoftHSM2 at this store.

        Must happen before the module's first C_Initialize in this process. If
        something already initialised it (with another configuration), the
        module is re-initialised so it reads ours; sessions cached by
        ipad_mdm.crypto.pkcs11_keys are dropped since re-initialising invalidates them.
        """
        os.environ["SOFTHSM2_CONF"] = str(self.conf_path)
        import pkcs11

        from ipad_mdm.crypto import pkcs11_keys as keys

        loaded = getattr(pkcs11, "_loaded", {})
        if self.module in loaded:
            loaded[self.module].reinitialize()
            keys.forget_pkcs11_sessions()

    def token_folder(self, label: str) -> Path:
        """The folder SoftHSM2 keeps `label`'s objects in (moving it away is pulling the token out)."""
        found = [d for d in self.token_dir.iterdir()
                 if (d / "token.object").exists() and label.encode() in (d / "token.object").read_bytes()]
        if len(found) != 1:
            raise KeyError(f"token {label!r}: {len(found)} folders match")
        return found[0]

    def token(self, label: str) -> SoftHsmToken:
        if label not in self.labels:
            raise KeyError(f"token {label!r} was not created (have {self.labels}); tokens must exist before the module loads")
        return SoftHsmToken(self.module, label, self.pin, self.so_pin, self.conf_path)


# Runs in a child interpreter (see module docstring for why). Reads a JSON
# request from argv[1], the PIN from the environment; prints a JSON result.
_CHILD_SOURCE = r"""
import json, os, sys
import pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

req = json.loads(sys.argv[1])
lib = pkcs11.lib(req["module"])
token = lib.get_token(token_label=req["token"])
pin = os.environ["%(pin_env)s"]
label = req["label"]

if req["action"] == "generate":
    with token.open(rw=True, user_pin=pin) as session:
        if list(session.get_objects({Attribute.LABEL: label})):
            sys.exit(f"label {label!r} already exists on the token")
        key_id = os.urandom(16)
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,      # secret attributes never readable
            Attribute.EXTRACTABLE: False,   # cannot be wrapped out either
        }
        public_template = {Attribute.TOKEN: True}
        if req["kind"] == "rsa":
            session.generate_keypair(
                KeyType.RSA, req["bits"], id=key_id, label=label, store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                public_template={**public_template, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                private_template=private_template,
            )
        else:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(req["curve"])}, local=True
            )
            params.generate_keypair(
                id=key_id, label=label, store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=public_template, private_template=private_template,
            )
    print(json.dumps({"label": label, "id": key_id.hex()}))

elif req["action"] == "store_certificate":
    from pkcs11 import CertificateType
    from cryptography import x509
    der = bytes.fromhex(req["der"])
    cert = x509.load_der_x509_certificate(der)
    with token.open(rw=True, user_pin=pin) as session:
        session.create_object({
            Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
            Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.LABEL: label,
            Attribute.ID: bytes.fromhex(req["key_id"]) if req["key_id"] else b"\x01",
            Attribute.SUBJECT: cert.subject.public_bytes(), Attribute.VALUE: der,
        })
    print(json.dumps({"label": label}))

elif req["action"] == "inspect":
    with token.open(user_pin=pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        report = {"key_type": key.key_type.name}
        for attr in ("SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE", "PRIVATE", "TOKEN"):
            report[attr] = bool(key[getattr(Attribute, attr)])
        secrets = ("PRIVATE_EXPONENT", "PRIME_1", "PRIME_2") if key.key_type == KeyType.RSA else ("VALUE",)
        refused = {}
        for attr in secrets:
            try:
                value = key[getattr(Attribute, attr)]
                refused[attr] = "READABLE" if value else "EMPTY"
            except pkcs11.PKCS11Error as exc:
                refused[attr] = type(exc).__name__
        report["secret_attributes"] = refused
    print(json.dumps(report))
""" % {"pin_env": _PIN_ENV}
