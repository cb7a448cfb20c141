"""HTTP face of the reverse-proxy decision (edge.py) and of its classification rules.

  ANY  /edge/decide                    nginx auth_request / Traefik ForwardAuth
  ANY  /edge/decide/<original path>    Envoy ext_authz (HTTP mode, path_prefix /edge/decide)
  GET  /edge/denied?code=…&lang=en     the reason page nginx shows for a refusal (error_page)
  GET  /api/v1/edge/rules              documents.admin   the rules, in order, and the rule set
  POST /api/v1/edge/rules              documents.admin   add {name, pattern, pattern_kind, classification,
                                                        methods, host, position}
  DELETE /api/v1/edge/rules/<id>       documents.admin
  PUT  /api/v1/edge/settings           documents.admin   {default_classification, probe_base_url,
                                                        probe_header, probe_ttl_seconds}
  GET  /api/v1/edge/classify?uri=…&host=…&method=…   documents.admin   what a URI is classified as
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, g, jsonify, render_template, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ipad_mdm.auth import require
from ipad_mdm.web import error, instance, unit_of_work

from . import edge, edge_fast, gate, i18n
from .edge_models import EdgeRule
from .edge_rules import (RuleError, add_rule, classify, configure, delete_rule, ensure_ruleset, rule_dict, ruleset,
                         ruleset_dict)
from .views import grace_banner

log = logging.getLogger("document_gateway.edge")
bp = Blueprint("document_gateway_edge", __name__, template_folder="templates")

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _lang() -> str:
    if request.args.get("lang") in ("en", "vi"):
        return request.args["lang"]
    best = request.accept_languages.best_match(["vi", "en"])
    return "en" if best == "en" else "vi"


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes["application/json"] > request.accept_mimetypes["text/html"]


def reason_page(code: str, status: int, lang: str, problems=()) -> Response:
    """A refusal the proxy (or Envoy/Traefik, which pass the body on) shows the leader."""
    code = code if code in edge.EDGE_REASONS or code in i18n.REASONS else "internal_error"
    vi, fix_vi, en, fix_en = edge.texts(code)
    reason, fix = (en, fix_en) if lang == "en" else (vi, fix_vi)
    if _wants_json():
        resp = jsonify({"error": code, "reason": reason, "fix": fix, "problems": list(problems), "status": status})
        resp.status_code = status
    else:
        ui = i18n.UI[lang]
        html = render_template("docs/denied.html", ui=ui, page_title=ui["denied_title"], heading=ui["denied_title"],
                               reason=reason, problems=problems, fix=fix, code=code, back=None)
        resp = Response(html, status=status, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    return resp


@bp.route("/edge/decide", methods=ALL_METHODS, defaults={"suffix": None})
@bp.route("/edge/decide/<path:suffix>", methods=ALL_METHODS)
def decide(suffix):
    inst = instance()
    lang = _lang()
    # A compliant iPad's request was answered in front of Flask (edge_fast.EdgeWSGI); here the rest.
    refused = edge.proxy_checks(request.headers, inst.settings)
    if refused == "untrusted_proxy":
        presented = gate.Presented(via_proxy=True, error=refused)
    else:
        presented = edge_fast.PARSED.presented(request, inst.settings)
        if presented.error is None and refused is not None:
            presented = gate.Presented(via_proxy=True, error=refused)
    original, malformed = None, None
    try:
        original = edge.original_request(request.headers, request.method, suffix)
    except edge.Malformed as exc:
        malformed = exc.code
    client_ip = gate.client_ip(request, presented)
    try:
        with inst.database.session() as s:
            answer = edge.decide(s, inst.ca, presented, original, malformed if presented.error is None else None)
            answer.audit_id = edge.record(s, inst.audit_key, answer, presented, client_ip)
    except IntegrityError:
        log.error("edge: the audit chain cannot be appended (a row past its head): refusing")
        answer = edge.EdgeAnswer(403, "audit_unavailable", gate.Decision(False, "audit_unavailable"), original)
    headers = edge.response_headers(answer, lang, grace_banner(answer.decision, lang) if answer.allowed else None)
    if answer.allowed:
        log.debug("edge: allow %s %s", answer.original.method, answer.original.uri[:200])
        return Response("", status=200, headers=headers)
    log.info("edge: deny %s (%s) %s", answer.status, answer.code,
             (answer.original.uri[:200] if answer.original else "-"))
    resp = reason_page(answer.code, answer.status, lang, answer.decision.problems(lang)
                       if answer.code.startswith(("verdict", "grace")) else ())
    resp.headers.update(headers)
    return resp


@bp.get("/edge/denied")
def denied_page():
    """What nginx shows on a refusal: only known codes are rendered (nothing from the query is echoed)."""
    code = request.args.get("code", "")[:48]
    status = 401 if code in ("no_client_certificate", "untrusted_proxy", "certificate_invalid") else 403
    return reason_page(code, status, _lang())


# ------------------------------------------------------------------ rules (security officers)
def _rule_error(exc: RuleError):
    return error(400, "invalid_rule", field=exc.code, detail=str(exc))


@bp.get("/api/v1/edge/rules")
@require("documents.admin")
def list_rules():
    with unit_of_work() as s:
        head = ensure_ruleset(s)
        rules = s.scalars(select(EdgeRule).order_by(EdgeRule.position, EdgeRule.id)).all()
        return jsonify({"ruleset": ruleset_dict(head), "rules": [rule_dict(r) for r in rules]})


@bp.post("/api/v1/edge/rules")
@require("documents.admin")
def create_rule():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return error(400, "invalid_json", detail="request body must be a JSON object")
    try:
        with unit_of_work() as s:
            rule = add_rule(s, data, actor=getattr(g, "api_principal", "") or "")
            body = rule_dict(rule)
    except RuleError as exc:
        return _rule_error(exc)
    log.info("edge rule %s added by %s: %s %s -> %s", body["id"], body["created_by"], body["pattern_kind"],
             body["pattern"][:200], body["classification"])
    return jsonify(body), 201


@bp.delete("/api/v1/edge/rules/<int:rule_id>")
@require("documents.admin")
def remove_rule(rule_id: int):
    with unit_of_work() as s:
        if not delete_rule(s, rule_id):
            return error(404, "rule_not_found")
    log.info("edge rule %s deleted by %s", rule_id, getattr(g, "api_principal", ""))
    return jsonify({"deleted": rule_id})


@bp.put("/api/v1/edge/settings")
@require("documents.admin")
def update_settings():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return error(400, "invalid_json", detail="request body must be a JSON object")
    try:
        with unit_of_work() as s:
            return jsonify(ruleset_dict(configure(s, data)))
    except RuleError as exc:
        return _rule_error(exc)


@bp.get("/api/v1/edge/classify")
@require("documents.admin")
def classify_uri():
    uri = request.args.get("uri", "")
    if not uri.startswith("/") or len(uri) > edge.MAX_URI:
        return error(400, "invalid_uri", detail=f"uri starts with / and has at most {edge.MAX_URI} characters")
    method = (request.args.get("method") or "GET").upper()
    with unit_of_work() as s:
        try:
            classification, rule = classify(s, ruleset(s, None), request.args.get("host", ""), method, uri)
        except UnicodeDecodeError:
            return error(400, "invalid_uri", detail="the URI's percent-encoding is not UTF-8")
        except edge.ClassificationUnavailable as exc:
            return error(409, "classification_unavailable", detail=str(exc))
    return jsonify({"uri": uri, "classification": classification, "rule": rule.id if rule else None,
                    "refused_to_every_ipad": classification == "secret"})

