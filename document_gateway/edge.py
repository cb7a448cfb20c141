"""The decision for a reverse proxy in front of the office's own document system.

nginx `auth_request` (and the same contract: Envoy ext_authz in HTTP mode, Traefik ForwardAuth)
asks before passing each request upstream. The proxy has verified the iPad's TLS client
certificate against this server's CA and forwards it (nginx `$ssl_client_escaped_cert`) with the
proxy secret and the original request:

    X-Proxy-Secret              the shared secret (settings.proxy_secret): without it nothing is believed
    <client_cert_header>        the URL-escaped PEM certificate (IPAD_MDM_CLIENT_CERT_HEADER)
    X-Original-Method / -URI    nginx;  X-Forwarded-Method / -Uri: Traefik;
                                Envoy: the method of the check request, the URI after /edge/decide
    X-Original-Host / X-Forwarded-Host   the protected application's host (rules may name it)
    X-Forwarded-For             the iPad's address (the right-most entry, as the proxy appends it)

Answer: 200 with headers for the upstream (who, which leader and unit, the verdict, the
classification, a warning during grace), or 401 (who the device is cannot be established) /
403 (it is known and refused) with X-MDM-Reason and a Vietnamese/English reason page (JSON when
asked). Only 2xx, 401 and 403 mean something to auth_request, so every refusal is one of those.

The device decision is gate.decide → access.device_access, the same function /docs/ uses; then
the edge classification (edge_rules): secret is refused to every mobile device whatever its
verdict, and a role sees only the classifications policy.ROLE_CLEARANCE gives it. Every answer is
appended to the same keyed hash chain as /docs/ (action "edge"), in the decision's transaction.
"""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.models import Unit
from mdm import proxy_secret_ok

from . import audit, gate, i18n, policy
from .edge_models import EdgeRuleSet
from .edge_rules import ClassificationUnavailable, classify, ruleset
from .models import DeviceAccess

log = logging.getLogger("document_gateway.edge")

MAX_URI = 2048
_METHOD = re.compile(r"[A-Z]{1,16}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

EDGE_REASONS = i18n.EDGE_REASONS


def texts(code: str) -> tuple[str, str, str, str]:
    return i18n.edge_texts(code)


@dataclass(frozen=True)
class Original:
    method: str
    uri: str
    host: str


@dataclass
class EdgeAnswer:
    status: int
    code: str
    decision: gate.Decision
    original: Original | None = None
    classification: str | None = None
    unit_code: str | None = None
    audit_id: int | None = None
    headers: dict = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.status == 200


class Malformed(ValueError):
    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def original_request(headers, method: str, suffix: str | None) -> Original:
    """What the proxy asks about (pure: headers is any mapping with .get)."""
    uri = headers.get("X-Original-URI") or headers.get("X-Forwarded-Uri")
    if uri is None and suffix is not None:
        uri = "/" + suffix  # Envoy ext_authz: the original path follows the check path
    m = headers.get("X-Original-Method") or headers.get("X-Forwarded-Method") or method
    host = headers.get("X-Original-Host") or headers.get("X-Forwarded-Host") or ""
    if not uri:
        raise Malformed("request_malformed")
    if len(uri) > MAX_URI:
        raise Malformed("uri_too_long")
    if not uri.startswith("/") or _CONTROL.search(uri):
        raise Malformed("request_malformed")
    m = m.strip().upper()
    if not _METHOD.match(m) or len(host) > 255:
        raise Malformed("request_malformed")
    return Original(m, uri, host)


# ------------------------------------------------------------------ the one query
_UNIT_CODE = select(Unit.code).where(Unit.id == DeviceAccess.leader_unit_id).scalar_subquery()
_VERSION = select(EdgeRuleSet.version).where(EdgeRuleSet.id == 1).scalar_subquery()
_LOOKUP = gate._LOOKUP.add_columns(_UNIT_CODE.label("unit_code"), _VERSION.label("rules_version"))


def _lookup(session: Session, fp: str):
    row = session.connection().execute(_LOOKUP, {"fp": fp}).first()
    session.info["edge.row"] = row
    return row


# ------------------------------------------------------------------ deciding
def decide(session: Session, ca, presented: gate.Presented, original: Original | None,
           malformed: str | None = None) -> EdgeAnswer:
    """Device first (the gateway's function), then the edge classification. No writes."""
    if malformed is not None:
        return EdgeAnswer(403, malformed, gate.Decision(False, malformed, cert_sha256=presented.fingerprint,
                                                       via_proxy=presented.via_proxy), original)
    decision = gate.decide(session, ca, presented, lookup=_lookup)
    if not decision.allowed:
        return EdgeAnswer(decision.status if decision.status in (401, 403) else 403, decision.code, decision, original)
    row = session.info.get("edge.row")
    rules = ruleset(session, row.rules_version if row is not None else None)
    unit_code = row.unit_code if row is not None else None
    try:
        classification, _rule = classify(session, rules, original.host, original.method, original.uri)
    except ClassificationUnavailable as exc:
        log.warning("edge: classification of %s %s unavailable: %s", original.method, original.uri[:200], exc)
        return EdgeAnswer(403, "classification_unavailable", replace(decision, allowed=False), original,
                          unit_code=unit_code)
    except (UnicodeDecodeError, ValueError):
        return EdgeAnswer(403, "request_malformed", replace(decision, allowed=False), original, unit_code=unit_code)
    if classification in policy.NEVER_ON_MOBILE:
        return EdgeAnswer(403, "classification_secret", replace(decision, allowed=False), original, classification,
                          unit_code)
    if not policy.classification_allowed(decision.leader_role, classification):
        return EdgeAnswer(403, "classification_not_allowed", replace(decision, allowed=False), original,
                          classification, unit_code)
    return EdgeAnswer(200, decision.code, decision, original, classification, unit_code)


def audit_fields(answer: EdgeAnswer, presented: gate.Presented, client_ip: str | None) -> dict:
    """What the hash chain keeps of an edge answer (record() and the hot path's own append)."""
    d, code = answer.decision, answer.code
    vi, _, en, _ = texts(code)
    if d.verdict_reasons_en and not answer.allowed and code.startswith(("verdict", "grace")):
        vi, en = f"{vi} {'; '.join(d.verdict_reasons_vi)}", f"{en} {'; '.join(d.verdict_reasons_en)}"
    o = answer.original
    return dict(
        action="edge", decision="allow" if answer.allowed else "deny", reason_code=code,
        reason_vi=vi, reason_en=en, http_status=answer.status, device_udid=d.udid, device_id=d.device_id,
        cert_sha256=d.cert_sha256 or presented.fingerprint, leader_id=d.leader_id, leader_name=d.leader_name,
        leader_role=d.leader_role, leader_unit_id=d.leader_unit_id, verdict_state=d.verdict_state,
        classification=answer.classification, client_ip=client_ip,
        request_method=o.method if o else None, request_uri=o.uri if o else None)


def record(session: Session, key: bytes, answer: EdgeAnswer, presented: gate.Presented, client_ip: str | None) -> int:
    """The answer's row in the hash chain, in the caller's transaction (commit right after)."""
    return audit.append(session, key, **audit_fields(answer, presented, client_ip)).id


def proxy_checks(headers, settings) -> str | None:
    """The proxy's own word: None when the request carries the proxy secret and the proxy did not
    report a failed certificate verification (nginx $ssl_client_verify); else the reason code."""
    if not proxy_secret_ok(headers, settings):
        return "untrusted_proxy"
    if headers.get("X-Client-Verify", "SUCCESS") != "SUCCESS":
        return "certificate_invalid"
    return None


@functools.lru_cache(maxsize=4096)  # a few leaders' names and units, encoded on every allowed request
def _h(value: str) -> str:
    """Header values are Latin-1 on the wire: Vietnamese names go percent-encoded UTF-8."""
    return quote(value, safe=" ,.:-_/()")


def response_headers(answer: EdgeAnswer, lang: str, warning: str | None) -> dict:
    d = answer.decision
    out = {"X-MDM-Decision": "allow" if answer.allowed else "deny", "X-MDM-Reason": answer.code,
           "Cache-Control": "no-store"}
    if answer.audit_id is not None:
        out["X-MDM-Audit-Id"] = str(answer.audit_id)
    if not answer.allowed:
        return out
    out.update({"X-MDM-Device-UDID": d.udid or "", "X-MDM-Leader-Id": str(d.leader_id or ""),
                "X-MDM-Leader-Name": _h(d.leader_name or ""), "X-MDM-Leader-Role": d.leader_role or "",
                "X-MDM-Unit": _h(answer.unit_code or ""), "X-MDM-Verdict": d.verdict_state or "",
                "X-MDM-Classification": answer.classification or ""})
    if d.grace_deadline is not None:
        out["X-MDM-Grace-Until"] = d.grace_deadline.isoformat()
    if warning:
        out["X-MDM-Warning"] = _h(warning)
    return out
