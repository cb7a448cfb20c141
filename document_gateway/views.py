"""The gateway the leaders' iPads use: GET /docs/ (list) and GET /docs/<public_id> (read).

Every request: gate decision (gate.py) → per-document checks → one audit row (audit.py) →
answer. Nothing is served unless its audit row is committed first. Unknown ids, ids of
documents the leader may not see, secret documents and malformed ids (path traversal
attempts included: the route takes any path) all get the same 404 body; the audit row keeps
the true reason for security officers.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from urllib.parse import quote

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from sqlalchemy import or_, select

from ipad_mdm.web import instance

from . import audit, docs_fast, gate, i18n, policy
from .filetypes import ALLOWED
from .models import Document, DocumentUnit
from .service import PUBLIC_ID, document_dict

log = logging.getLogger("document_gateway.views")
bp = Blueprint("document_gateway", __name__, template_folder="templates")

VN_TZ = dt.timezone(dt.timedelta(hours=7))  # Viet Nam has no daylight saving time
CHUNK = 256 * 1024
LIST_LIMIT = 1000


def _lang() -> str:
    return "en" if request.args.get("lang") == "en" else "vi"


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes["application/json"] > request.accept_mimetypes["text/html"]


def _fmt_time(value: dt.datetime | None, lang: str) -> str:
    if value is None:
        return ""
    local = value.astimezone(VN_TZ)
    if lang == "en":
        return local.strftime("%H:%M, %d %b %Y (Viet Nam time)")
    return local.strftime("%H:%M ngày %d/%m/%Y (giờ Việt Nam)")


def _fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@bp.after_request
def _headers(resp: Response) -> Response:
    # Documents and lists must not linger in the iPad's cache or any proxy (a lost device).
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers.setdefault("Content-Security-Policy",
                            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'")
    return resp


# ------------------------------------------------------------------ pages (templates/docs/)


def _page(template: str, title: str, status: int, lang: str, **ctx) -> Response:
    html = render_template(f"docs/{template}", ui=i18n.UI[lang], page_title=title, **ctx)
    return Response(html, status=status, mimetype="text/html")


def _denied(decision: gate.Decision, lang: str) -> Response:
    if _wants_json():
        resp = jsonify({"error": decision.code, "reason": decision.reason(lang), "fix": decision.fix(lang),
                        "problems": list(decision.problems(lang)), "status": decision.status})
        resp.status_code = decision.status
        return resp
    ui = i18n.UI[lang]
    return _page("denied.html", ui["denied_title"], decision.status, lang, heading=ui["denied_title"],
                 reason=decision.reason(lang), problems=decision.problems(lang), fix=decision.fix(lang),
                 code=decision.code, back=None)


def _not_found(lang: str) -> Response:
    # Identical for every "not found" cause: nothing tells an unknown id from a hidden one.
    vi, fix_vi, en, fix_en = i18n.texts("document_unknown")
    if _wants_json():
        resp = jsonify({"error": "not_found", "reason": en if lang == "en" else vi, "status": 404})
        resp.status_code = 404
        return resp
    ui = i18n.UI[lang]
    return _page("denied.html", ui["not_found_title"], 404, lang, heading=ui["not_found_title"],
                 reason=en if lang == "en" else vi, problems=(), fix=fix_en if lang == "en" else fix_vi,
                 code="not_found", back="/docs/" + ("?lang=en" if lang == "en" else ""))


@bp.errorhandler(audit.AuditUnavailable)
def _audit_unavailable(exc):
    """Fail closed: without its audit row no decision is answered with content (see audit.py)."""
    log.error("gateway refuses %s %s: %s", request.method, request.path, exc)
    try:
        with instance().database.session() as s:
            audit.raise_alarm(s, audit.ChainStatus(False, audit.first_row_beyond_head(s), 0, "row_beyond_head",
                                                   str(exc)), source="gateway append")
    except Exception:
        log.exception("recording the audit alarm failed")
    resp = _denied(gate.Decision(False, "audit_unavailable", status=503), _lang())
    resp.headers["Retry-After"] = "300"
    return resp


def _internal_error(lang: str) -> Response:
    d = gate.Decision(False, "internal_error", status=500)
    return _denied(d, lang)


# ------------------------------------------------------------------ audit glue
def _audit(decision: gate.Decision, presented: gate.Presented, action: str, *, http_status: int, code: str | None = None,
           public_id: str | None = None, doc: Document | None = None, allowed: bool | None = None) -> None:
    audit.record(instance().database, instance().audit_key,
                 **_audit_fields(decision, presented, action, http_status=http_status, code=code, public_id=public_id,
                                 doc=doc, allowed=allowed))


def _audit_fields(decision: gate.Decision, presented: gate.Presented, action: str, *, http_status: int,
                  code: str | None = None, public_id: str | None = None, doc=None, allowed: bool | None = None) -> dict:
    """The audit row of one answer: the same fields whichever path (docs_fast or the full one) writes it."""
    code = code or decision.code
    vi, _, en, _ = i18n.texts(code)
    if code in i18n.AUDIT_DETAIL_EN:
        vi, en = i18n.AUDIT_DETAIL_VI[code], i18n.AUDIT_DETAIL_EN[code]
    problems_vi, problems_en = "; ".join(decision.verdict_reasons_vi), "; ".join(decision.verdict_reasons_en)
    if problems_en and not decision.allowed:
        vi, en = f"{vi} {problems_vi}", f"{en} {problems_en}"
    return dict(
        action=action, decision="allow" if (decision.allowed if allowed is None else allowed) else "deny",
        reason_code=code, reason_vi=vi, reason_en=en, http_status=http_status, device_udid=decision.udid,
        device_id=decision.device_id, cert_sha256=decision.cert_sha256 or presented.fingerprint,
        leader_id=decision.leader_id, leader_name=decision.leader_name, leader_role=decision.leader_role,
        leader_unit_id=decision.leader_unit_id, verdict_state=decision.verdict_state,
        document_public_id=public_id[:64] if public_id is not None else None,
        document_id=doc.id if doc is not None else None, classification=doc.classification if doc is not None else None,
        client_ip=gate.client_ip(request, presented),
    )


def _gate(session):
    inst = instance()
    presented = gate.presented(request, inst.settings)
    decision = gate.decide(session, inst.ca, presented)
    return presented, decision


def grace_banner(decision: gate.Decision, lang: str) -> str | None:
    if decision.code != "allowed_grace":
        return None
    return i18n.UI[lang]["grace_banner"].format(deadline=_fmt_time(decision.grace_deadline, lang))


# ------------------------------------------------------------------ list
def _visible_documents(session, decision: gate.Decision) -> list[Document]:
    allowed = sorted(policy.ROLE_CLEARANCE.get(decision.leader_role, ()))
    stmt = select(Document).where(Document.withdrawn_at.is_(None), Document.classification.in_(allowed))
    if decision.leader_role not in policy.OFFICE_WIDE_ROLES:
        shared = select(DocumentUnit.document_id).where(DocumentUnit.unit_id == decision.leader_unit_id)
        stmt = stmt.where(or_(Document.unit_id == decision.leader_unit_id, Document.all_units.is_(True),
                              Document.id.in_(shared)))
    rows = session.scalars(stmt.order_by(Document.uploaded_at.desc(), Document.id.desc()).limit(LIST_LIMIT)).all()
    # The SQL narrows; policy.visible is the single rule (role lists, secret) applied to each row.
    return [d for d in rows if policy.visible(decision.leader_role, decision.leader_unit_id, d)]


@bp.get("/docs/")
def list_documents():
    lang = _lang()
    presented = None
    try:
        with instance().database.session() as s:
            presented, decision = _gate(s)
            docs = _visible_documents(s, decision) if decision.allowed else []
    except Exception:
        log.exception("gateway list failed")
        if presented is not None:
            _audit(gate.Decision(False, "internal_error", status=500), presented, "list", http_status=500)
        return _internal_error(lang)
    if not decision.allowed:
        _audit(decision, presented, "list", http_status=decision.status)
        return _denied(decision, lang)
    _audit(decision, presented, "list", http_status=200)
    banner = grace_banner(decision, lang)
    if _wants_json():
        return jsonify({
            "leader": {"id": decision.leader_id, "full_name": decision.leader_name, "title": decision.leader_title,
                       "role": decision.leader_role, "unit_id": decision.leader_unit_id},
            "device": decision.udid,
            "verdict": {"state": decision.verdict_state,
                        "grace_deadline": decision.grace_deadline.isoformat() if decision.grace_deadline else None},
            "warning": banner, "problems": list(decision.problems(lang)) if banner else [],
            "documents": [document_dict(d) for d in docs],
        })
    ui = i18n.UI[lang]
    suffix = "?lang=en" if lang == "en" else ""
    rows = [{
        "href": f"/docs/{d.public_id}{suffix}", "title": d.title, "filename": d.filename,
        "classification": d.classification, "signature_status": d.signature_status,
        "signature_signer": d.signature_signer, "signed_at": _fmt_time(d.signature_signed_at, lang),
        "uploaded": _fmt_time(d.uploaded_at, lang), "size": _fmt_size(d.size),
    } for d in docs]
    return _page("list.html", ui["title"], 200, lang, d=decision, docs=rows, banner=banner,
                 problems=decision.problems(lang) if banner else ())


# ------------------------------------------------------------------ read
def _content_disposition(doc: Document, inline: bool) -> str:
    name = doc.filename
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name) or "document"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _parse_range(header: str | None, size: int):
    """None: serve everything. (start, end) inclusive. "bad": 416.
    Limits: exactly one byte range per request (multi-range requests are a known
    amplification vector and no iPad viewer needs them), within the file."""
    if not header:
        return None
    header = header.strip()
    if not header.startswith("bytes=") or len(header) > 100:
        return "bad"
    spec = header[6:].strip()
    if "," in spec:
        return "bad"
    first, sep, last = spec.partition("-")
    if not sep:
        return "bad"
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "bad"
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
            end = min(end, size - 1)
    except ValueError:
        return "bad"
    if start < 0 or start >= size or end < start:
        return "bad"
    return start, end


def _stream(path, start: int, length: int):
    with open(path, "rb") as f:
        f.seek(start)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


@dataclass(frozen=True)
class _Plan:
    """How a document is answered once it may be read: status, headers, the bytes to send."""
    status: int
    headers: dict
    path: object
    start: int
    length: int


def _plan(doc) -> _Plan | None:
    """The answer for a document the leader may read, or None when its stored file is missing."""
    store = current_app.extensions["document_gateway.store"]
    path = store.path_for(doc.sha256)
    try:
        size = os.stat(path).st_size
    except OSError:
        log.error("document %s: stored file %s is missing", doc.public_id, doc.sha256)
        return None
    etag = f'"{doc.sha256}"'
    rng = _parse_range(request.headers.get("Range"), size)
    if_range = request.headers.get("If-Range")
    if rng is not None and if_range is not None and if_range.strip() != etag:
        rng = None  # the client's partial copy is of another version: send it all
    ftype = next((t for t in ALLOWED if t.mime == doc.mime_type), None)
    inline = bool(ftype and ftype.inline) and request.args.get("download") != "1"
    headers = {
        "Content-Disposition": _content_disposition(doc, inline),
        "Accept-Ranges": "bytes",
        "ETag": etag,
    }
    if doc.mime_type != "application/pdf":
        # Text and images cannot run anything; the sandbox makes sure of it.
        headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
    else:
        headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    if rng == "bad":
        headers["Content-Range"] = f"bytes */{size}"
        return _Plan(416, headers, path, 0, 0)
    status = 200 if rng is None else 206
    start, end = (0, size - 1) if rng is None else rng
    length = end - start + 1 if size else 0
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    return _Plan(status, headers, path, start, length)


def _send(plan: _Plan, doc) -> Response:
    if plan.status == 416:
        return Response(b"", status=416, headers=plan.headers)
    return Response(_stream(plan.path, plan.start, plan.length), status=plan.status, headers=plan.headers,
                    content_type=doc.mime_type, direct_passthrough=True)


@bp.get("/docs/<path:public_id>")
def read_document(public_id: str):
    lang = _lang()
    inst = instance()
    presented = gate.presented(request, inst.settings)
    # On PostgreSQL a read the leader may make is answered by docs_fast: one transaction of two
    # statements. Whatever it does not allow outright is decided below from scratch.
    opened = docs_fast.open_document(inst, presented, public_id)
    if opened is not None:
        plan = _plan(opened.doc)
        if plan is not None and plan.status != 416:
            fields = _audit_fields(opened.decision, presented, "view", http_status=plan.status, public_id=public_id,
                                   doc=opened.doc)
            if opened.commit(inst.audit_key, fields):
                return _send(plan, opened.doc)
        else:
            opened.abandon()
    return _read_in_full(public_id, lang, presented)


def _read_in_full(public_id: str, lang: str, presented: gate.Presented):
    doc = None
    try:
        with instance().database.session() as s:
            decision = gate.decide(s, instance().ca, presented)
            code = None
            if decision.allowed:
                if PUBLIC_ID.match(public_id):
                    doc = s.scalar(select(Document).where(Document.public_id == public_id))
                code = policy.document_refusal(decision.leader_role, decision.leader_unit_id, doc)
            if doc is not None:
                s.expunge(doc)
    except Exception:
        log.exception("gateway read failed")
        _audit(gate.Decision(False, "internal_error", status=500), presented, "view", http_status=500,
               public_id=public_id)
        return _internal_error(lang)
    if not decision.allowed:
        _audit(decision, presented, "view", http_status=decision.status, public_id=public_id)
        return _denied(decision, lang)
    if code is not None:
        _audit(decision, presented, "view", http_status=404, code=code, public_id=public_id, doc=doc, allowed=False)
        return _not_found(lang)
    plan = _plan(doc)
    if plan is None:
        _audit(gate.Decision(False, "internal_error", status=500), presented, "view", http_status=500,
               public_id=public_id, doc=doc)
        return _internal_error(lang)
    _audit(decision, presented, "view", http_status=plan.status, public_id=public_id, doc=doc)
    return _send(plan, doc)
