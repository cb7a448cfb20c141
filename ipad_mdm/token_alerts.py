"""The alert when the CA or profile-signing token stops working, and the note when it is back.

ipad_mdm.crypto.pkcs11_keys tells its listeners once per change and process; this records a
security event (stored, logged, e-mailed to the security officers) in a transaction of its own,
since the request that noticed it is being refused and rolled back. Several server processes notice
the same outage: one event per outage and token, whichever process is first.
"""
from __future__ import annotations

import logging
import threading
import weakref

from sqlalchemy import select

from . import security_events
from .crypto import pkcs11_keys

log = logging.getLogger("ipad_mdm.token_alerts")

UNAVAILABLE, RESTORED = "signing_token_unavailable", "signing_token_restored"
_instances: dict[int, weakref.ref] = {}  # id -> the instance (an Instance is not hashable)
_lock = threading.Lock()


def install(inst) -> None:
    """Record token changes in `inst`'s database when one of its keys is on a PKCS#11 token."""
    settings = inst.settings
    if settings.ca_pkcs11 is None and settings.signing_pkcs11 is None:
        return
    with _lock:
        _instances[id(inst)] = weakref.ref(inst)
    pkcs11_keys.on_token_state(_on_change)


def _uses(inst, change: pkcs11_keys.TokenStateChange) -> bool:
    return any(p is not None and (p.module, p.token_label) == (change.module, change.token)
               for p in (inst.settings.ca_pkcs11, inst.settings.signing_pkcs11))


def _on_change(change: pkcs11_keys.TokenStateChange) -> None:
    with _lock:
        live = [ref() for ref in _instances.values()]
        targets = [i for i in live if i is not None and _uses(i, change)]
    # On a thread of its own: the request that noticed it may hold a write transaction (on SQLite, the
    # database's only write lock) until it has been refused and rolled back.
    threading.Thread(target=_record_all, args=(targets, change), name="token-alert", daemon=True).start()


def _record_all(targets, change: pkcs11_keys.TokenStateChange) -> None:
    for inst in targets:
        try:
            with inst.database.session() as session:
                record(session, change)
        except Exception:  # the database may be the next thing that is down; the log line stays
            log.exception("could not record the state of PKCS#11 token %r", change.token)


def record(session, change: pkcs11_keys.TokenStateChange):
    key = f"{change.module}|{change.token}"
    last = next((e for e in session.scalars(
        select(security_events.SecurityEvent)
        .where(security_events.SecurityEvent.kind.in_((UNAVAILABLE, RESTORED)))
        .order_by(security_events.SecurityEvent.id.desc()).limit(50))
        if (e.details or {}).get("key") == key), None)
    details = {"key": key, "token": change.token, "purpose": change.purpose}
    if change.available:
        if last is None or last.kind != UNAVAILABLE:
            return None
        purpose_vi, purpose_en = pkcs11_keys.PURPOSES.get(change.purpose or "", ("khóa", "the key"))
        return security_events.record(
            session, RESTORED, details=details,
            summary_vi=f"Token “{change.token}” ({purpose_vi}) đã sử dụng lại được.",
            summary_en=f"The PKCS#11 token “{change.token}” ({purpose_en}) works again.")
    if last is not None and last.kind == UNAVAILABLE:
        return None
    error = change.error
    details["reason"] = error.reason if error else None
    return security_events.record(session, UNAVAILABLE, details=details,
                                  summary_vi=error.message("vi") if error else "",
                                  summary_en=error.message("en") if error else "")
