"""Console accounts: argon2id passwords, lockout, TOTP (encrypted at rest), role permissions.

Everything here runs in the caller's transaction (the caller commits), so the CLI, the web views
and the tests use the same functions.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit

from .models import CONSOLE_ROLES, LoginThrottle, User

log = logging.getLogger("console.accounts")

# argon2id with argon2-cffi's RFC 9106 "low memory" profile (64 MiB, 3 passes): strong, yet a login
# costs ~50 ms on the 2-core servers this runs on.
_hasher = PasswordHasher()
# Verified when the username is unknown, so an unknown name costs the same time as a wrong password
# (no username enumeration through timing).
_DUMMY_HASH = _hasher.hash("not-a-real-password-only-for-constant-time")

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
TOTP_ISSUER = "VPCP iPad MDM"

# What each console role may do. Leaders see only their own device (checked per object, not here).
# security_officer may lock and put a device in Lost Mode (incident response), but wiping is the IT
# Center's retirement workflow; auditors read everything and change nothing.
PERMISSIONS: dict[str, frozenset[str]] = {
    "it_admin": frozenset({
        "dashboard", "devices.read", "devices.write", "handover.read", "handover.write", "commands.send",
        "commands.lock", "commands.erase", "commands.power", "units.read", "units.write", "leaders.write",
        "policies.read", "reports.read", "documents.read", "devices.reenroll", "declarations.write", "apps.write",
        "tokens.read", "tokens.write", "tokens.lost", "tokens.revoked", "vpn.read", "vpn.migrate",
        "ade.read", "ade.write", "push.manage",
    }),
    "security_officer": frozenset({
        "dashboard", "devices.read", "handover.read", "commands.send", "commands.lock", "units.read",
        "policies.read", "policies.write", "reports.read", "reports.write", "audit.read",
        "documents.read", "documents.admin", "security.read", "security.write", "apps.accept",
        "tokens.read", "tokens.lost", "tokens.revoked", "vpn.read", "vpn.migrate", "vpn.providers", "ade.read",
    }),
    "auditor": frozenset({
        "dashboard", "devices.read", "handover.read", "units.read", "policies.read", "reports.read",
        "audit.read", "documents.read", "security.read", "tokens.read", "vpn.read", "ade.read",
    }),
    "leader": frozenset({"own_device.read"}),
}
assert set(PERMISSIONS) == set(CONSOLE_ROLES)


def allowed(role: str | None, permission: str) -> bool:
    return permission in PERMISSIONS.get(role or "", frozenset())


class AccountError(ValueError):
    pass


def _validate_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise AccountError("password is too long")


def _unit(session: Session, unit) -> Unit | None:
    if unit is None or unit == "":
        return None
    if isinstance(unit, Unit):
        return unit
    row = session.get(Unit, unit) if isinstance(unit, int) else session.scalar(select(Unit).where(Unit.code == unit))
    if row is None:
        raise AccountError(f"unknown unit {unit!r}")
    return row


def create_user(session: Session, username: str, password: str, role: str, *, full_name: str = "",
                unit=None, leader_id: int | None = None, created_by: str = "") -> User:
    """Create a console account (used by `ipad-mdm user create` and by the tests).

    A leader account must point at a gateway Leader: that link is what limits the account to its own
    device, so an unlinked leader account would see nothing useful and is refused."""
    username = (username or "").strip().lower()
    if not username or len(username) > 64 or not all(c.isalnum() or c in "._-@" for c in username):
        raise AccountError("username: 1-64 characters, letters, digits and . _ - @")
    if role not in CONSOLE_ROLES:
        raise AccountError(f"role must be one of {', '.join(CONSOLE_ROLES)}")
    _validate_password(password)
    if session.scalar(select(User.id).where(func.lower(User.username) == username)) is not None:
        raise AccountError(f"user {username!r} already exists")
    unit_row = _unit(session, unit)
    if role == "leader":
        from document_gateway import Leader

        leader = session.get(Leader, leader_id) if leader_id is not None else None
        if leader is None:
            raise AccountError("a leader account needs leader_id of an existing gateway leader")
        unit_row = unit_row or session.get(Unit, leader.unit_id)
    elif leader_id is not None:
        raise AccountError("only leader accounts are linked to a leader")
    user = User(username=username, full_name=(full_name or "").strip()[:255], role=role,
                unit_id=unit_row.id if unit_row else None, leader_id=leader_id,
                password_hash=_hasher.hash(password), created_by=created_by[:128])
    session.add(user)
    session.flush()
    log.info("console user %s (%s) created by %s", username, role, created_by or "?")
    return user


def set_password(session: Session, user: User, password: str) -> None:
    _validate_password(password)
    user.password_hash = _hasher.hash(password)
    user.password_changed_at = utcnow()
    user.session_version += 1  # every other session of this user ends


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == (username or "").strip().lower()))


class LoginResult:
    """ok: password accepted (TOTP may still be needed); locked_until: set when the account is locked."""

    def __init__(self, user: User | None, ok: bool, locked_until: dt.datetime | None = None):
        self.user, self.ok, self.locked_until = user, ok, locked_until

    @property
    def needs_totp(self) -> bool:
        return bool(self.ok and self.user is not None and self.user.totp_enabled)


def _register_failure(user: User, now: dt.datetime) -> None:
    user.failed_logins += 1
    if user.failed_logins >= MAX_FAILURES:
        user.locked_until = now + LOCKOUT
        user.failed_logins = 0
        user.session_version += 1
        log.warning("console user %s locked until %s after %d failures", user.username, user.locked_until, MAX_FAILURES)


def is_locked(user: User, now: dt.datetime | None = None) -> bool:
    return user.locked_until is not None and user.locked_until > (now or utcnow())


def check_password(session: Session, username: str, password: str, now: dt.datetime | None = None) -> LoginResult:
    """First factor. Counts failures; the 5th failure locks the account for 15 minutes. While locked,
    even the right password is refused (and not counted), so guessing cannot continue."""
    now = now or utcnow()
    user = find_user(session, username)
    if user is None or not user.active:
        try:
            _hasher.verify(_DUMMY_HASH, password or "")
        except VerificationError:
            pass
        return LoginResult(None, False, _throttle_unknown(session, username, now))
    if is_locked(user, now):
        return LoginResult(user, False, user.locked_until)
    try:
        _hasher.verify(user.password_hash, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        _register_failure(user, now)
        return LoginResult(user, False, user.locked_until if is_locked(user, now) else None)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    if not user.totp_enabled:
        login_succeeded(user, now)
    return LoginResult(user, True)


def _throttle_unknown(session: Session, username: str, now: dt.datetime) -> dt.datetime | None:
    """Count a failure for a name without an active account exactly as for a real one; returns
    the lock's end when the name is (now) locked."""
    key = hashlib.sha256((username or "").strip().lower().encode()).hexdigest()
    session.execute(delete(LoginThrottle).where(LoginThrottle.updated_at < now - 2 * LOCKOUT))
    row = session.get(LoginThrottle, key)
    if row is None:
        row = LoginThrottle(name_sha256=key, failed_logins=0, updated_at=now)
        session.add(row)
    if row.locked_until is not None and row.locked_until > now:
        return row.locked_until
    row.failed_logins += 1
    row.updated_at = now
    if row.failed_logins >= MAX_FAILURES:
        row.locked_until = now + LOCKOUT
        row.failed_logins = 0
        return row.locked_until
    return None


def login_succeeded(user: User, now: dt.datetime | None = None) -> None:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now or utcnow()


# ------------------------------------------------------------------ TOTP
def new_totp_secret() -> str:
    return pyotp.random_base32()


def encrypt_secret(fernet: Fernet, secret: str) -> bytes:
    return fernet.encrypt(secret.encode())


def decrypt_secret(fernet: Fernet, blob: bytes) -> str:
    try:
        return fernet.decrypt(blob).decode()
    except InvalidToken as exc:  # key rotated without re-encrypting: refuse, never bypass
        raise AccountError("TOTP secret cannot be decrypted with the instance key") from exc


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def _matching_step(secret: str, code: str, at: float) -> int | None:
    """The 30-second step the code belongs to, allowing one step of clock drift either way."""
    code = (code or "").strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    step_now = int(at) // totp.interval
    for step in (step_now, step_now - 1, step_now + 1):
        if pyotp.utils.strings_equal(totp.at(step * totp.interval), code):
            return step
    return None


def enable_totp(user: User, fernet: Fernet, secret: str, code: str, at: float | None = None) -> bool:
    """Turn TOTP on once the user proves their authenticator app has the secret."""
    step = _matching_step(secret, code, time.time() if at is None else at)
    if step is None:
        return False
    user.totp_secret_enc = encrypt_secret(fernet, secret)
    user.totp_enabled = True
    user.totp_last_step = step
    user.session_version += 1
    return True


def verify_totp(user: User, fernet: Fernet, code: str, at: float | None = None, now: dt.datetime | None = None) -> bool:
    """Second factor. A wrong code counts as a failed login (same lockout); a code whose step was
    already used is refused (replay within the 90-second acceptance window)."""
    now = now or utcnow()
    if is_locked(user, now) or not user.totp_enabled or user.totp_secret_enc is None:
        return False
    step = _matching_step(decrypt_secret(fernet, user.totp_secret_enc), code, time.time() if at is None else at)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        _register_failure(user, now)
        return False
    user.totp_last_step = step
    login_succeeded(user, now)
    return True


def disable_totp(user: User) -> None:
    user.totp_enabled = False
    user.totp_secret_enc = None
    user.totp_last_step = None
    user.session_version += 1
