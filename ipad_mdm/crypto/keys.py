"""Private-key handles: a PEM file (embedded default) or a key on a PKCS#11 token.

Callers never touch key material: they ask a handle to sign or to decrypt.
That is what lets the office keep its signing and CA keys on USB tokens.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import sys
import threading
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
    def load(cls, path: str | os.PathLike) -> "FileKey":
        data = Path(path).read_bytes()
        return cls(serialization.load_pem_private_key(data, password=None))

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


class Pkcs11Error(RuntimeError):
    """A PKCS#11 token or key could not be used.

    Messages name the module, token and key labels so an operator can act on
    them; they never contain the PIN.
    """


class Pkcs11PinError(Pkcs11Error):
    """The token refused the user PIN (wrong, locked, expired or malformed)."""


# --- process-wide PKCS#11 state --------------------------------------------
#
# PKCS#11 keeps state per *process and module*, not per session: C_Initialize
# once per process, and the user login is shared by every session of the
# process on that token (a second C_Login fails with CKR_USER_ALREADY_LOGGED_IN,
# and python-pkcs11's Session.close() calls C_Logout, which logs out every
# session of the process on that token). So every
# Pkcs11Key on the same token shares one logged-in session from this registry
# instead of opening its own.

_state_lock = threading.Lock()
# module path -> pid that (re)initialised it in this process.
_lib_pids: dict[str, int] = {}
# Modules that were loaded before a fork: the child must re-initialise them.
_stale_after_fork: set[str] = set()
# lib objects inherited from a parent process: kept referenced forever, because
# python-pkcs11 calls C_Finalize when one is garbage-collected, which would tear
# down the state this process initialised afresh.
_inherited_libs: list = []
# (module, token label) -> shared session.
_tokens: dict[tuple[str, str], "_TokenSession"] = {}
# (module, token label) -> keyed hash of a PIN the token rejected. Retrying the
# same wrong PIN on every request would lock a USB token within seconds.
_rejected_pins: dict[tuple[str, str], bytes] = {}
_PIN_HASH_KEY = os.urandom(32)


class _TokenSession:
    """One logged-in session on one token, for one process."""

    __slots__ = ("session", "lock", "pid")

    def __init__(self, session):
        self.session = session
        # PKCS#11 allows one active operation per session; python-pkcs11 also
        # locks, but a multi-step operation (find + sign) must not interleave.
        self.lock = threading.Lock()
        self.pid = os.getpid()


def _after_fork_in_child() -> None:
    # Runs in the child right after os.fork() (gunicorn, Celery prefork,
    # multiprocessing). Locks may have been held by parent threads that do not
    # exist here, and the parent's sessions must not be used by the child
    # (PKCS#11 v2.40 §6.7.7): drop everything and mark loaded modules stale.
    # No PKCS#11 call is made here; re-initialisation happens lazily.
    global _state_lock
    _state_lock = threading.Lock()
    _tokens.clear()
    _stale_after_fork.update(_lib_pids)
    pkcs11_mod = sys.modules.get("pkcs11")
    loaded = getattr(pkcs11_mod, "_loaded", None) if pkcs11_mod is not None else None
    if isinstance(loaded, dict):  # modules loaded by other code (admin tools, tests)
        _stale_after_fork.update(loaded)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def pkcs11_lib(module: str):
    """The process-wide, initialised python-pkcs11 ``lib`` for ``module``.

    Use this (not ``pkcs11.lib``) anywhere in the project that talks to a token,
    so the module is re-initialised correctly in forked children.
    """
    with _state_lock:
        return _lib_locked(module)


def _lib_locked(module: str):
    import pkcs11

    try:
        # python-pkcs11 caches one lib object per path and calls C_Initialize once.
        lib = pkcs11.lib(module)
    except pkcs11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot load PKCS#11 module {module}: {exc or type(exc).__name__}") from None
    pid = os.getpid()
    if module in _stale_after_fork or _lib_pids.get(module, pid) != pid:
        lib = _reinitialize_in_child(module, lib)
        _stale_after_fork.discard(module)
    _lib_pids[module] = pid
    return lib


def _reinitialize_in_child(module: str, inherited):
    """Give a forked child its own C_Initialize (PKCS#11 v2.40 §6.7.7).

    First try a plain C_Initialize through a fresh lib object: modules that
    detect fork themselves (OpenSC, p11-kit) reset their copied state there
    WITHOUT talking to the device, which matters because the parent still owns
    the pcscd connection. Only if the module says it is already initialised
    (SoftHSM2 with library.reset_on_fork = false) do we C_Finalize first; that
    module's state is private memory of this process, so finalising it cannot
    disturb the parent.
    """
    import pkcs11
    from pkcs11 import _pkcs11

    _inherited_libs.append(inherited)
    try:
        fresh = _pkcs11.lib(module)
    except pkcs11.PKCS11Error as exc:
        if "already initialized" not in str(exc).lower():
            raise Pkcs11Error(f"cannot re-initialise PKCS#11 module {module} after fork: {exc}") from None
        inherited.reinitialize()
        fresh = inherited
    loaded = getattr(pkcs11, "_loaded", None)
    if isinstance(loaded, dict):
        loaded[module] = fresh  # so pkcs11.lib(module) returns the child's object from now on
    return fresh


def forget_pkcs11_sessions() -> None:
    """Drop cached token sessions (after re-initialising a module, e.g. in tests).

    Sessions are not closed: closing a logged-in session logs out every session
    of this process on that token.
    """
    with _state_lock:
        _tokens.clear()
        _rejected_pins.clear()


def _pin_source(settings: Pkcs11Settings) -> str:
    # Tells the operator which setting to fix, without revealing the value.
    if settings.pin_file:
        return f"pin_file {settings.pin_file}"
    if settings.pin_env:
        return f"environment variable {settings.pin_env}"
    return "literal pin setting"


def _token_session(settings: Pkcs11Settings) -> _TokenSession:
    ident = (settings.module, settings.token_label)
    with _state_lock:
        current = _tokens.get(ident)
        if current is not None and current.pid == os.getpid():
            return current
        lib = _lib_locked(settings.module)
        ts = _TokenSession(_login(lib, settings))
        _tokens[ident] = ts
        return ts


def _drop_token_session(settings: Pkcs11Settings, ts: _TokenSession) -> None:
    with _state_lock:
        ident = (settings.module, settings.token_label)
        if _tokens.get(ident) is ts:
            del _tokens[ident]


def _login(lib, settings: Pkcs11Settings):
    import pkcs11

    label = settings.token_label
    try:
        token = lib.get_token(token_label=label)
    except pkcs11.NoSuchToken:
        try:
            present = sorted(t.label for t in lib.get_tokens())
        except pkcs11.PKCS11Error:
            present = []
        raise Pkcs11Error(
            f"PKCS#11 token {label!r} not found (module {settings.module}; tokens present: {present})"
        ) from None
    except pkcs11.MultipleTokensReturned:
        raise Pkcs11Error(f"several PKCS#11 tokens are labelled {label!r}; labels must be unique") from None

    pin = settings.resolve_pin()
    ident = (settings.module, label)
    pin_hash = hmac.new(_PIN_HASH_KEY, pin.encode("utf-8"), hashlib.sha256).digest()
    if _rejected_pins.get(ident) == pin_hash:
        raise Pkcs11PinError(
            f"PKCS#11 token {label!r} already rejected the PIN from the {_pin_source(settings)}; "
            "not retrying it so the token does not lock. Correct the PIN setting."
        )
    try:
        return token.open(user_pin=pin)
    except pkcs11.UserAlreadyLoggedIn:
        # Another session of this process (another key, an admin tool) is
        # logged in; a new session shares that login.
        # (python-pkcs11 leaks the session whose C_Login failed; it is one handle.)
        return token.open()
    except pkcs11.PinIncorrect:
        _rejected_pins[ident] = pin_hash
        reason = "incorrect PIN"
    except pkcs11.PinLocked:
        reason = "PIN is locked (unblock it with the SO PIN)"
    except pkcs11.PinExpired:
        reason = "PIN has expired"
    except (pkcs11.PinInvalid, pkcs11.PinLenRange):
        _rejected_pins[ident] = pin_hash
        reason = "PIN has an invalid length or characters"
    except pkcs11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot open a session on PKCS#11 token {label!r}: {type(exc).__name__}") from None
    raise Pkcs11PinError(f"login to PKCS#11 token {label!r} failed: {reason} (from the {_pin_source(settings)})")


def _session_lost_errors():
    import pkcs11

    # The session or the handles in it became invalid (token unplugged and
    # re-inserted, module restarted, someone logged the process out): reopen.
    return (
        pkcs11.SessionHandleInvalid,
        pkcs11.SessionClosed,
        pkcs11.DeviceRemoved,
        pkcs11.TokenNotPresent,
        pkcs11.UserNotLoggedIn,
        pkcs11.ObjectHandleInvalid,
        pkcs11.KeyHandleInvalid,
    )


class Pkcs11Key(KeyHandle):
    """An RSA or EC private key on a PKCS#11 token, used through python-pkcs11.

    All keys on one token share one logged-in session per process (see the
    registry above), opened lazily and re-opened after fork (gunicorn, Celery
    prefork) and after the token was lost. The private key never leaves the
    token; only sign and decrypt operations are sent to it.
    """

    def __init__(self, settings: Pkcs11Settings):
        self._settings = settings
        self._cache: tuple[_TokenSession, object] | None = None  # (session, private key object)
        self._public = None  # the public key is immutable; survives fork and reconnects

    def __repr__(self) -> str:
        s = self._settings
        return f"<Pkcs11Key token={s.token_label!r} key={s.key_label!r}>"

    def _private_key(self):
        ts = _token_session(self._settings)
        cache = self._cache
        if cache is not None and cache[0] is ts:
            return ts, cache[1]
        with ts.lock:
            private, public = _find_keypair(ts.session, self._settings)
        self._cache = (ts, private)
        self._public = public
        return ts, private

    def _run(self, operation):
        """Run ``operation(private_key)`` on the token, reconnecting once if the session was lost."""
        lost = _session_lost_errors()
        for attempt in range(2):
            ts, private = self._private_key()
            try:
                with ts.lock:
                    return operation(private)
            except lost as exc:
                _drop_token_session(self._settings, ts)
                self._cache = None
                if attempt:
                    raise Pkcs11Error(
                        f"PKCS#11 token {self._settings.token_label!r} is unavailable ({type(exc).__name__})"
                    ) from None

    def public_key(self):
        if self._public is None:
            self._private_key()
        return self._public

    def sign(self, data: bytes, hash_name: str = "sha256") -> bytes:
        import pkcs11
        from pkcs11.util.ec import encode_ecdsa_signature

        if hash_name not in _HASHES:
            raise ValueError(f"unsupported hash {hash_name}")
        if isinstance(self.public_key(), rsa.RSAPublicKey):
            mech = {
                "sha256": pkcs11.Mechanism.SHA256_RSA_PKCS,
                "sha384": pkcs11.Mechanism.SHA384_RSA_PKCS,
                "sha512": pkcs11.Mechanism.SHA512_RSA_PKCS,
                "sha1": pkcs11.Mechanism.SHA1_RSA_PKCS,
            }[hash_name]
            return bytes(self._run(lambda key: key.sign(data, mechanism=mech)))
        # ECDSA: hash here (USB tokens are slow at hashing and many lack the
        # combined mechanisms); the token signs the digest and returns r||s,
        # which X.509 and CMS want DER-encoded.
        digest = hashes.Hash(_HASHES[hash_name]())
        digest.update(data)
        value = digest.finalize()
        raw = self._run(lambda key: key.sign(value, mechanism=pkcs11.Mechanism.ECDSA))
        return encode_ecdsa_signature(bytes(raw))

    def decrypt(self, ciphertext: bytes) -> bytes:
        import pkcs11

        if not isinstance(self.public_key(), rsa.RSAPublicKey):
            raise TypeError("decryption needs an RSA key")
        try:
            return bytes(self._run(lambda key: key.decrypt(ciphertext, mechanism=pkcs11.Mechanism.RSA_PKCS)))
        except (
            pkcs11.EncryptedDataInvalid,
            pkcs11.EncryptedDataLenRange,
            pkcs11.DataInvalid,
            pkcs11.DataLenRange,
            pkcs11.GeneralError,  # SoftHSM2 reports bad PKCS#1 padding this way
            pkcs11.FunctionFailed,
        ):
            # One generic error, the type cryptography raises: callers (SCEP)
            # must not be able to tell padding failures apart (Bleichenbacher).
            raise ValueError("Decryption failed") from None


def _find_keypair(session, settings: Pkcs11Settings):
    """Find the private key by label and its public key; return (private, cryptography public key)."""
    import pkcs11

    label, token = settings.key_label, settings.token_label
    try:
        private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label)
    except pkcs11.NoSuchKey:
        raise Pkcs11Error(f"no private key labelled {label!r} on PKCS#11 token {token!r}") from None
    except pkcs11.MultipleObjectsReturned:
        raise Pkcs11Error(f"several private keys are labelled {label!r} on PKCS#11 token {token!r}") from None
    public = _load_pkcs11_public(session, label, private)
    if private.key_type == pkcs11.KeyType.RSA:
        # A stale public key left under the same label after a key was
        # regenerated would make every signature unverifiable; RSA private keys
        # expose their modulus, so check the pair matches.
        try:
            modulus = int.from_bytes(private[pkcs11.Attribute.MODULUS], "big")
        except pkcs11.PKCS11Error:
            modulus = None
        if modulus is not None and modulus != public.public_numbers().n:
            raise Pkcs11Error(f"public and private key labelled {label!r} on token {token!r} do not match")
    return private, public


def _load_pkcs11_public(session, label: str, private):
    """The public half as a cryptography key.

    Tokens do not always hold a public-key object labelled like the private key
    (keys imported with only a certificate, tools that label only one half), so
    fall back to the shared CKA_ID, then to the RSA private key's public
    attributes, then to a certificate with the same CKA_ID.
    """
    import pkcs11

    pub = None
    try:
        pub = session.get_key(object_class=pkcs11.ObjectClass.PUBLIC_KEY, label=label)
    except pkcs11.NoSuchKey:
        key_id = _attr(private, pkcs11.Attribute.ID)
        if key_id:
            try:
                pub = session.get_key(object_class=pkcs11.ObjectClass.PUBLIC_KEY, id=key_id)
            except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
                pub = None
    source = pub if pub is not None else private
    if private.key_type == pkcs11.KeyType.RSA:
        n = _attr(source, pkcs11.Attribute.MODULUS)
        e = _attr(source, pkcs11.Attribute.PUBLIC_EXPONENT)
        if n and e:
            return rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    elif private.key_type == pkcs11.KeyType.EC and pub is not None:
        return _ec_public_from_attrs(pub[pkcs11.Attribute.EC_PARAMS], pub[pkcs11.Attribute.EC_POINT])
    elif private.key_type != pkcs11.KeyType.EC:
        raise Pkcs11Error(f"key {label!r}: unsupported PKCS#11 key type {private.key_type!r}")
    key_id = _attr(private, pkcs11.Attribute.ID)
    if key_id:
        for obj in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE, pkcs11.Attribute.ID: key_id}):
            from cryptography import x509

            return x509.load_der_x509_certificate(bytes(obj[pkcs11.Attribute.VALUE])).public_key()
    raise Pkcs11Error(f"no public key or certificate found for key {label!r}")


def _attr(obj, attribute):
    import pkcs11

    try:
        return obj[attribute]
    except (pkcs11.AttributeTypeInvalid, pkcs11.AttributeSensitive, pkcs11.FunctionFailed):
        return None


def _ec_public_from_attrs(ec_params: bytes, ec_point: bytes):
    from asn1crypto import core
    from asn1crypto import keys as akeys
    from cryptography import x509

    params = akeys.ECDomainParameters.load(ec_params)
    if params.name != "named":
        raise Pkcs11Error("EC keys with explicit curve parameters are not supported")
    curve = ec.get_curve_for_oid(x509.ObjectIdentifier(params.chosen.dotted))()
    # PKCS#11 wants CKA_EC_POINT as a DER OCTET STRING; some tokens return the bare point.
    point = ec_point
    if ec_point[:1] == b"\x04" and len(ec_point) != 1 + 2 * ((curve.key_size + 7) // 8):
        point = core.OctetString.load(ec_point).native
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def load_key(path: str | os.PathLike | None = None, pkcs11_settings: Pkcs11Settings | None = None) -> KeyHandle:
    if pkcs11_settings is not None:
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
