"""Keys on a PKCS#11 token (python-pkcs11): the process-wide module and session state, the key
handle, and the errors an operator can act on.

A token can disappear under a running server (a USB token pulled, SoftHSM2's token folder moved,
the PIN changed): operations then raise Pkcs11Error naming the token and purpose, listeners are told
once per change (the composition root raises a security event), and the module is rescanned at most
every RESCAN_INTERVAL seconds so the key works again as soon as the token is back, without a restart.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from ..config import Pkcs11Settings
from .keys import _HASHES, KeyHandle

log = logging.getLogger("ipad_mdm.pkcs11")

# What a key on a token is for, in the words of the people who must fix it.
PURPOSES = {
    "ca": ("khóa của tổ chức cấp chứng thư số cho thiết bị (CA)", "the device CA key"),
    "signing": ("khóa ký hồ sơ cấu hình", "the profile-signing key"),
}
RESCAN_INTERVAL = 2.0  # seconds between two rescans of a module whose token is missing


class Pkcs11Error(RuntimeError):
    """A PKCS#11 token or key could not be used.

    Messages name the module, token and key labels so an operator can act on
    them; they never contain the PIN. `reason` is a stable code (token_absent,
    pin_rejected, key_unusable); `purpose` (ca, signing) is set by the key that
    raised it; `message(lang)` is what a person reads.
    """

    reason = "key_unusable"

    def __init__(self, message: str, *, token: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.token = token
        if reason:
            self.reason = reason
        self.purpose: str | None = None

    def message(self, lang: str) -> str:
        purpose_vi, purpose_en = PURPOSES.get(self.purpose or "", ("khóa trên token", "a key on a token"))
        token = self.token or "?"
        if lang != "vi":
            what = {"token_absent": "is not present",
                    "pin_rejected": "refused the configured PIN"}.get(self.reason, "cannot be used")
            return (f"The PKCS#11 token “{token}” ({purpose_en}) {what}; the operation was not done. "
                    f"Detail: {self}")
        if self.reason == "token_absent":
            return (f"Không tìm thấy token “{token}” ({purpose_vi}); thao tác chưa được thực hiện. Đề nghị cắm lại "
                    "token hoặc kiểm tra thiết bị lưu khóa; máy chủ tự nhận lại token, không cần khởi động lại.")
        if self.reason == "pin_rejected":
            return (f"Token “{token}” ({purpose_vi}) không chấp nhận mã PIN đã cấu hình; thao tác chưa được thực "
                    "hiện. Đề nghị quản trị hệ thống kiểm tra cấu hình mã PIN.")
        return (f"Không sử dụng được {purpose_vi} trên token “{token}”; thao tác chưa được thực hiện. "
                "Đề nghị quản trị hệ thống kiểm tra token và cấu hình khóa.")


class Pkcs11PinError(Pkcs11Error):
    """The token refused the user PIN (wrong, locked, expired or malformed)."""

    reason = "pin_rejected"


@dataclass(frozen=True)
class TokenStateChange:
    """A token became unusable (available=False, with the error) or usable again, in this process."""

    module: str
    token: str
    purpose: str | None
    available: bool
    error: Pkcs11Error | None = None


_listeners: list = []
_down: dict[tuple[str, str], str] = {}  # (module, token) -> reason, in this process
_down_lock = threading.Lock()


def on_token_state(listener) -> None:
    """Call `listener(TokenStateChange)` when a token becomes unusable or usable again (once per change
    and process; never under a lock; exceptions are logged, not raised)."""
    if listener not in _listeners:
        _listeners.append(listener)


def _announce(settings: Pkcs11Settings, purpose: str | None, error: Pkcs11Error | None) -> None:
    ident = (settings.module, settings.token_label)
    with _down_lock:
        was = _down.get(ident)
        if error is None:
            if was is None:
                return
            del _down[ident]
        else:
            if was == error.reason:
                return
            _down[ident] = error.reason
    change = TokenStateChange(settings.module, settings.token_label, purpose, error is None, error)
    for listener in list(_listeners):
        try:
            listener(change)
        except Exception:  # an alert that cannot be stored must not hide the refusal itself
            log.exception("token state listener failed")


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
# module -> monotonic time of its last rescan (C_Finalize + C_Initialize).
_last_rescan: dict[str, float] = {}


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
        try:
            session = _login(_lib_locked(settings.module), settings)
        except Pkcs11Error as exc:
            # Many modules (SoftHSM2 among them) look for their tokens only in C_Initialize: a token put
            # back after it went missing stays invisible until the module is initialised again.
            if exc.reason != "token_absent" or not _rescan_locked(settings.module):
                raise
            session = _login(_lib_locked(settings.module), settings)
        ts = _TokenSession(session)
        _tokens[ident] = ts
        return ts


def _rescan_locked(module: str) -> bool:
    """Re-initialise `module` so it enumerates its tokens again; at most every RESCAN_INTERVAL.

    Every session of this process on that module becomes invalid, so the ones in the registry are
    dropped (each key re-opens on its next use); their locks are held meanwhile so no operation runs
    on a session being torn down."""
    import pkcs11

    now = time.monotonic()
    if now - _last_rescan.get(module, -RESCAN_INTERVAL) < RESCAN_INTERVAL:
        return False
    _last_rescan[module] = now
    lib = _lib_locked(module)
    held = [ts for (mod, _label), ts in _tokens.items() if mod == module]
    for ts in held:
        ts.lock.acquire()
    try:
        lib.reinitialize()
    except pkcs11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot re-initialise PKCS#11 module {module}: {type(exc).__name__}") from None
    finally:
        for ts in held:
            ts.lock.release()
    for ident in [i for i in _tokens if i[0] == module]:
        del _tokens[ident]
    log.info("PKCS#11 module %s re-initialised to look for its tokens again", module)
    return True


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
    except pkcs11.MultipleTokensReturned:
        raise Pkcs11Error(f"several PKCS#11 tokens are labelled {label!r}; labels must be unique",
                          token=label) from None
    except pkcs11.PKCS11Error as exc:
        # NoSuchToken, or the module failing to enumerate a slot whose token vanished
        # (SoftHSM2: GeneralError; card readers: TokenNotPresent, DeviceRemoved).
        try:
            present = sorted(t.label for t in lib.get_tokens())
        except pkcs11.PKCS11Error:
            present = []
        raise Pkcs11Error(
            f"PKCS#11 token {label!r} not found (module {settings.module}; tokens present: {present}; "
            f"{type(exc).__name__})", token=label, reason="token_absent") from None

    try:
        pin = settings.resolve_pin()
    except (OSError, RuntimeError) as exc:
        raise Pkcs11PinError(f"cannot read the PIN of PKCS#11 token {label!r} from the {_pin_source(settings)}: "
                             f"{type(exc).__name__}", token=label) from None
    ident = (settings.module, label)
    pin_hash = hmac.new(_PIN_HASH_KEY, pin.encode("utf-8"), hashlib.sha256).digest()
    if _rejected_pins.get(ident) == pin_hash:
        raise Pkcs11PinError(
            f"PKCS#11 token {label!r} already rejected the PIN from the {_pin_source(settings)}; "
            "not retrying it so the token does not lock. Correct the PIN setting.", token=label
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
    except (pkcs11.TokenNotPresent, pkcs11.DeviceRemoved, pkcs11.SlotIDInvalid) as exc:
        raise Pkcs11Error(f"PKCS#11 token {label!r} went away while logging in ({type(exc).__name__})",
                          token=label, reason="token_absent") from None
    except pkcs11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot open a session on PKCS#11 token {label!r}: {type(exc).__name__}",
                          token=label) from None
    raise Pkcs11PinError(f"login to PKCS#11 token {label!r} failed: {reason} (from the {_pin_source(settings)})",
                         token=label)


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

    def __init__(self, settings: Pkcs11Settings, *, purpose: str | None = None, certified_public=None):
        """purpose: "ca" or "signing" (named in errors and alerts). certified_public: the public key of
        the certificate this key belongs to, so a server can start while the token is away; the key
        found on the token must match it."""
        self._settings = settings
        self.purpose = purpose
        self._cache: tuple[_TokenSession, object] | None = None  # (session, private key object)
        self._public = None  # the public key is immutable; survives fork and reconnects
        self._certified = certified_public

    def __repr__(self) -> str:
        s = self._settings
        return f"<Pkcs11Key token={s.token_label!r} key={s.key_label!r}>"

    def _key_on(self, ts: _TokenSession):
        cache = self._cache
        if cache is not None and cache[0] is ts:
            return cache[1]
        from .pkcs11_objects import find_keypair, spki

        with ts.lock:
            private, public = find_keypair(ts.session, self._settings)
        if self._certified is not None and spki(public) != spki(self._certified):
            hint = ("for a new signing key, remove ca/signer.pem and restart so it is certified"
                    if self.purpose == "signing" else "put the key of the certificate back on the token")
            raise Pkcs11Error(f"the key labelled {self._settings.key_label!r} on PKCS#11 token "
                              f"{self._settings.token_label!r} is not the key of its certificate ({hint})",
                              token=self._settings.token_label)
        self._cache = (ts, private)
        self._public = public
        return private

    def _run(self, operation, passthrough: tuple = ()):
        """Run ``operation(private_key)`` on the token, reconnecting once if the session was lost;
        tell listeners when the token stops or starts working in this process."""
        import pkcs11

        try:
            result = self._attempt(operation, passthrough, pkcs11)
        except Pkcs11Error as exc:
            exc.purpose = exc.purpose or self.purpose
            exc.token = exc.token or self._settings.token_label
            _announce(self._settings, self.purpose, exc)
            raise
        _announce(self._settings, self.purpose, None)
        return result

    def _attempt(self, operation, passthrough, pkcs11):
        lost = _session_lost_errors()
        label = self._settings.token_label
        for attempt in range(2):
            ts = _token_session(self._settings)
            try:
                private = self._key_on(ts)
                with ts.lock:
                    return operation(private)
            except passthrough:
                raise
            except lost as exc:
                _drop_token_session(self._settings, ts)
                self._cache = None
                if attempt:
                    raise Pkcs11Error(f"PKCS#11 token {label!r} is unavailable ({type(exc).__name__})",
                                      token=label, reason="token_absent") from None
            except pkcs11.PKCS11Error as exc:
                raise Pkcs11Error(f"PKCS#11 token {label!r} failed the operation ({type(exc).__name__})",
                                  token=label) from None

    def public_key(self):
        if self._public is None:
            if self._certified is not None:
                return self._certified
            self._run(lambda _key: None)
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
        padding_errors = (
            pkcs11.EncryptedDataInvalid,
            pkcs11.EncryptedDataLenRange,
            pkcs11.DataInvalid,
            pkcs11.DataLenRange,
            pkcs11.GeneralError,  # SoftHSM2 reports bad PKCS#1 padding this way
            pkcs11.FunctionFailed,
        )
        try:
            return bytes(self._run(lambda key: key.decrypt(ciphertext, mechanism=pkcs11.Mechanism.RSA_PKCS),
                                   passthrough=padding_errors))
        except padding_errors:
            # One generic error, the type cryptography raises: callers (SCEP)
            # must not be able to tell padding failures apart (Bleichenbacher).
            raise ValueError("Decryption failed") from None
