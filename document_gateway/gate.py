"""The gate every /docs/ request passes: who is this device, then may it open documents.

  1. a client certificate: from the embedded TLS server (environ SSL_CLIENT_CERT) or, behind
     a TLS proxy, from the configured header — only when the proxy also proves the shared
     secret (mdm.presented_certificate, shared with the MDM endpoints).
  2. issued by this server's CA, currently valid, a stored device identity, not revoked
     (mdm.trusted_identity: mdm owns who the device is), bound to a device.
  3. the device's state, leader and verdict: access.device_access (the one owner of the
     document-access decision; the API and console ask it too).
  Then, per document: classification matrix and unit scope (policy.py).

Caching: a decision is cached per certificate fingerprint for a short TTL (default 30 s,
IPAD_MDM_GATEWAY_CACHE_SECONDS). Every request still runs ONE indexed query that reads the
certificate's revocation and expiry, the device's enrollment state and Lost Mode, and the
device's epoch (gateway_device_epochs). Every other event that can change a decision bumps the
epoch in the same transaction as the change (verdict.changed / verdict.updated, device.retired,
device.checked_out hooks; assignment and leader changes in service.py). A cached decision is
used only if its epoch and live state equal the current ones, so a device that turns
non-compliant is denied on its very next request, in any process.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from compliance import clock, current_verdict
from mdm import Device, DeviceAuthError, IdentityCertificate, UntrustedProxy, presented_certificate, trusted_identity

from . import i18n
from .access import device_access, leader_of
from .models import DeviceEpoch

log = logging.getLogger("document_gateway.gate")


def compliance_now() -> dt.datetime:
    """Deadlines are compared on compliance's clock (tests and replays move that one)."""
    return clock.now()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str
    status: int = 403
    cert_sha256: str | None = None
    device_id: int | None = None
    udid: str | None = None
    leader_id: int | None = None
    leader_name: str | None = None
    leader_title: str | None = None
    leader_role: str | None = None
    leader_unit_id: int | None = None
    verdict_state: str | None = None
    verdict_reasons_vi: tuple = ()
    verdict_reasons_en: tuple = ()
    grace_deadline: dt.datetime | None = None
    via_proxy: bool = False

    def reason(self, lang: str) -> str:
        vi, _, en, _ = i18n.texts(self.code)
        return en if lang == "en" else vi

    def fix(self, lang: str) -> str:
        _, fix_vi, _, fix_en = i18n.texts(self.code)
        return fix_en if lang == "en" else fix_vi

    def problems(self, lang: str) -> tuple:
        return self.verdict_reasons_en if lang == "en" else self.verdict_reasons_vi


@dataclass
class _Entry:
    decision: Decision
    epoch: int
    live: tuple  # (revoked_at, enrollment_state, lost_mode) seen when decided
    expires: float  # time.monotonic()
    not_after: dt.datetime
    device_id: int


class DecisionCache:
    """Per-process cache; see the module docstring for why it is safe."""

    def __init__(self, ttl: float, max_entries: int = 10000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        _CACHES.add(self)

    def get(self, fp: str) -> _Entry | None:
        with self._lock:
            entry = self._data.get(fp)
            if entry is not None:
                self._data.move_to_end(fp)
            return entry

    def put(self, fp: str, entry: _Entry) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._data[fp] = entry
            self._data.move_to_end(fp)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def drop(self, fp: str) -> None:
        with self._lock:
            self._data.pop(fp, None)

    def invalidate_device(self, device_id: int) -> None:
        with self._lock:
            for fp in [fp for fp, e in self._data.items() if e.device_id == device_id]:
                del self._data[fp]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_CACHES: "weakref.WeakSet[DecisionCache]" = weakref.WeakSet()


def invalidate_everywhere_in_process(device_id: int) -> None:
    for cache in list(_CACHES):
        cache.invalidate_device(device_id)


def cache_ttl(settings) -> float:
    raw = settings.extra.get("gateway_cache_seconds", os.environ.get("IPAD_MDM_GATEWAY_CACHE_SECONDS", "30"))
    return float(raw)


# ------------------------------------------------------------------ identity
@dataclass
class Presented:
    cert: x509.Certificate | None = None
    fingerprint: str | None = None
    via_proxy: bool = False
    error: str | None = None  # a reason code when the certificate cannot even be read


def presented(request, settings) -> Presented:
    try:
        cert, via_proxy = presented_certificate(request.headers, request.environ, settings)
    except UntrustedProxy:
        return Presented(via_proxy=True, error="untrusted_proxy")
    except DeviceAuthError:
        via_proxy = bool(settings.client_cert_header and request.headers.get(settings.client_cert_header))
        return Presented(via_proxy=via_proxy, error="certificate_invalid")
    if cert is None:
        return Presented(via_proxy=via_proxy, error="no_client_certificate")
    return Presented(cert=cert, fingerprint=cert.fingerprint(hashes.SHA256()).hex(), via_proxy=via_proxy)


def client_ip(request, presented: Presented) -> str | None:
    if presented.via_proxy and presented.error is None:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            # The trusted proxy appends the address it saw: the right-most entry.
            return forwarded.split(",")[-1].strip()[:64]
    return (request.remote_addr or "")[:64] or None


# ------------------------------------------------------------------ live state
def _live_row(session: Session, fp: str):
    """One indexed query: what can change under a cached decision without a hook."""
    stmt = (
        select(IdentityCertificate.device_id, IdentityCertificate.revoked_at, IdentityCertificate.not_after,
               Device.enrollment_state, Device.lost_mode_enabled, DeviceEpoch.epoch)
        .outerjoin(Device, Device.id == IdentityCertificate.device_id)
        .outerjoin(DeviceEpoch, DeviceEpoch.device_id == IdentityCertificate.device_id)
        .where(IdentityCertificate.sha256_fingerprint == fp)
    )
    return session.execute(stmt).first()


# ------------------------------------------------------------------ the decision
def decide(session: Session, ca, cache: DecisionCache, presented: Presented) -> Decision:
    if presented.error:
        return Decision(False, presented.error, status=401, via_proxy=presented.via_proxy)
    fp = presented.fingerprint
    live = _live_row(session, fp)
    now = utcnow()
    entry = cache.get(fp)
    if entry is not None and live is not None:
        device_id, revoked_at, not_after, state, lost, epoch = live
        if (entry.epoch == (epoch or 0) and entry.live == (revoked_at, state, bool(lost))
                and entry.device_id == device_id and time.monotonic() < entry.expires and now < entry.not_after):
            d = entry.decision
            if d.code != "allowed_grace" or (d.grace_deadline is not None and compliance_now() < d.grace_deadline):
                return replace(d, via_proxy=presented.via_proxy)
        cache.drop(fp)
    decision = _evaluate(session, ca, presented, now)
    if live is not None and decision.device_id is not None and decision.device_id == live[0]:
        device_id, revoked_at, not_after, state, lost, epoch = live
        cache.put(fp, _Entry(decision, epoch or 0, (revoked_at, state, bool(lost)), time.monotonic() + cache.ttl,
                             presented.cert.not_valid_after_utc, device_id))
    return decision


def _evaluate(session: Session, ca, presented: Presented, now: dt.datetime) -> Decision:
    cert, fp = presented.cert, presented.fingerprint
    base = Decision(False, "certificate_untrusted", cert_sha256=fp, via_proxy=presented.via_proxy)
    # Distinct reason codes for the audit; trusted_identity below stays the authority.
    if not ca.issued_this(cert):
        return base
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return replace(base, code="certificate_expired")
    try:
        identity = trusted_identity(session, ca, cert)
    except DeviceAuthError as exc:
        return replace(base, code=exc.code if exc.code in i18n.REASONS else "certificate_untrusted")
    if identity.device_id is None:
        return replace(base, code="certificate_unbound")
    device = session.get(Device, identity.device_id)
    d = replace(base, device_id=device.id, udid=device.udid)
    leader = leader_of(session, device)
    if leader is not None:
        d = replace(d, leader_id=leader.id, leader_name=leader.full_name, leader_title=leader.title,
                    leader_role=leader.role, leader_unit_id=leader.unit_id)
    verdict = current_verdict(session, device.id)
    if verdict is not None:
        d = replace(d, verdict_state=verdict.state, verdict_reasons_vi=tuple(verdict.reasons_vi),
                    verdict_reasons_en=tuple(verdict.reasons_en))
    access = device_access(device, leader, verdict, compliance_now())
    if access.allowed:
        return replace(d, allowed=True, code=access.code, status=200, grace_deadline=access.grace_deadline)
    return replace(d, code=access.code)
