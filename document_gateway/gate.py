"""The gate every /docs/ request passes: who is this device, then may it open documents.

  1. a client certificate: from the embedded TLS server (environ SSL_CLIENT_CERT) or, behind
     a TLS proxy, from the configured header — only when the proxy also proves the shared
     secret (mdm.presented_certificate, shared with the MDM endpoints).
  2. issued by this server's CA, currently valid, a stored device identity, not revoked
     (mdm.trusted_identity: mdm owns who the device is), bound to a device.
  3. the device's state, leader and verdict: access.device_access (the one owner of the
     document-access decision; the API and console ask it too).
  Then, per document: classification matrix and unit scope (policy.py).

No cache to go stale: the decision is a lookup. What changes only with a verdict, an assignment
or a leader (leader, verdict state, grace deadline, reasons) is precomputed per device in
gateway_device_access (models.DeviceAccess), in the same transaction as the change that alters
it (service.access_changed, from the verdict.changed / verdict.updated hooks and the leader and
assignment services). Every request reads it with the certificate's identity row and the
device's live state (revocation, enrollment state, Lost Mode) in ONE indexed query, then
applies access.device_access — microseconds of Python, and a device that turns non-compliant
is denied on its very next request, in any process.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from compliance import clock
from mdm import Device, DeviceAuthError, IdentityCertificate, UntrustedProxy, judge_identity, presented_certificate

from . import i18n
from .access import device_access
from .models import DeviceAccess
from .service import refresh_access

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


# ------------------------------------------------------------------ identity
@dataclass
class Presented:
    cert: x509.Certificate | None = None
    fingerprint: str | None = None
    via_proxy: bool = False
    error: str | None = None  # a reason code when the certificate cannot even be read
    fingerprint_bytes: bytes | None = None


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
    digest = cert.fingerprint(hashes.SHA256())
    return Presented(cert=cert, fingerprint=digest.hex(), via_proxy=via_proxy, fingerprint_bytes=digest)


def client_ip(request, presented: Presented) -> str | None:
    if presented.via_proxy and presented.error is None:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            # The trusted proxy appends the address it saw: the right-most entry.
            return forwarded.split(",")[-1].strip()[:64]
    return (request.remote_addr or "")[:64] or None


# ------------------------------------------------------------------ the decision
_ACCESS_COLUMNS = (DeviceAccess.device_id.label("access_device_id"), DeviceAccess.leader_id, DeviceAccess.leader_name,
                   DeviceAccess.leader_title, DeviceAccess.leader_role, DeviceAccess.leader_unit_id,
                   DeviceAccess.leader_active, DeviceAccess.verdict_state, DeviceAccess.grace_deadline,
                   DeviceAccess.unassessed, DeviceAccess.reasons_vi, DeviceAccess.reasons_en)


# Built once: constructing the statement cost more CPU than running it.
_LOOKUP = (
    select(IdentityCertificate.device_id, IdentityCertificate.revoked_at, Device.udid, Device.enrollment_state,
           Device.lost_mode_enabled, *_ACCESS_COLUMNS)
    .outerjoin(Device, Device.id == IdentityCertificate.device_id)
    .outerjoin(DeviceAccess, DeviceAccess.device_id == IdentityCertificate.device_id)
    .where(IdentityCertificate.sha256_fingerprint == bindparam("fp"))
)


def _lookup(session: Session, fp: str):
    """One indexed query: the identity, the device's live state and its precomputed access."""
    return session.connection().execute(_LOOKUP, {"fp": fp}).first()


@dataclass(frozen=True)
class _Leader:
    active: bool


@dataclass(frozen=True)
class _Verdict:
    state: str
    grace_deadline: dt.datetime | None
    deadline: dt.datetime | None
    failing_rules: tuple


def decide(session: Session, ca, presented: Presented, lookup=None) -> Decision:
    """`lookup(session, fp)`: a caller may read more columns in the same query (the edge
    decision reads its rule-set version and the leader's unit code)."""
    lookup = lookup or _lookup
    if presented.error:
        return Decision(False, presented.error, status=401, via_proxy=presented.via_proxy)
    cert, fp = presented.cert, presented.fingerprint
    base = Decision(False, "certificate_untrusted", cert_sha256=fp, via_proxy=presented.via_proxy)
    row = lookup(session, fp)
    try:
        judge_identity(ca, cert, known=row is not None, revoked_at=row.revoked_at if row is not None else None,
                       fingerprint=presented.fingerprint_bytes)
    except DeviceAuthError as exc:
        return replace(base, code=exc.code if exc.code in i18n.REASONS else "certificate_untrusted")
    if row.device_id is None:
        return replace(base, code="certificate_unbound")
    if row.access_device_id is None:
        # No precomputed state yet (a device enrolled before this table existed, or whose verdict
        # and assignment never changed since): compute it now, in this transaction.
        refresh_access(session, [row.device_id])
        row = lookup(session, fp)
    leader = _Leader(bool(row.leader_active)) if row.leader_id is not None else None
    verdict = None
    if row.verdict_state is not None:
        verdict = _Verdict(row.verdict_state, row.grace_deadline, row.grace_deadline,
                           ({"rule": "no_policy"},) if row.unassessed else ())
    device = _Device(row.enrollment_state, bool(row.lost_mode_enabled))
    access = device_access(device, leader, verdict, compliance_now())
    # Built once (dataclasses.replace, three times over, was a tenth of the edge's decision).
    return Decision(
        access.allowed, access.code, status=200 if access.allowed else 403, cert_sha256=fp,
        device_id=row.device_id, udid=row.udid, verdict_state=row.verdict_state,
        verdict_reasons_vi=tuple(row.reasons_vi or ()), verdict_reasons_en=tuple(row.reasons_en or ()),
        grace_deadline=access.grace_deadline if access.allowed else None, via_proxy=presented.via_proxy,
        **({"leader_id": row.leader_id, "leader_name": row.leader_name, "leader_title": row.leader_title,
            "leader_role": row.leader_role, "leader_unit_id": row.leader_unit_id} if leader is not None else {}))


@dataclass(frozen=True)
class _Device:
    enrollment_state: str
    lost_mode_enabled: bool
