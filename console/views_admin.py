"""Security pages: compliance policies, document classification, gateway audit log, reports."""
from __future__ import annotations

import datetime as dt
import json
import logging
import math

from flask import abort, flash, g, jsonify, redirect, request, send_file, url_for
from sqlalchemy import func, select

from ipad_mdm.models import Unit
from ipad_mdm.web import dispatcher, instance, unit_of_work

from . import integrations
from .views import PAGE_SIZE, _page_args
from .web import bp, can, label, lang, principal, render_page, requires, tr

log = logging.getLogger("console.policies")

POLICY_CHANGE_LABELS = {"created": ("Tạo mới", "Created"), "updated": ("Sửa nội dung", "Updated"),
                        "assigned": ("Đổi phạm vi áp dụng", "Assignment changed"), "deleted": ("Xoá", "Deleted")}

# The fields of a policy that the editor shows as JSON (what compliance.policies accepts).
POLICY_FIELDS = ("name", "description", "enabled", "rules", "actions", "grace_hours", "escalation_hours", "assign")
NEW_POLICY_TEMPLATE = {
    "name": "", "description": "", "enabled": True,
    "rules": [{"kind": "min_os_version", "version": "17.0"}],
    "actions": [], "grace_hours": 72, "escalation_hours": None, "assign": {"all": True, "units": []},
}


# ------------------------------------------------------------------ policies
@bp.get("/policies")
@requires("policies.read")
def policies():
    from compliance import policies as svc

    with unit_of_work() as s:
        rows = [svc.policy_dict(s, p) for p in svc.list_policies(s, include_deleted=request.args.get("deleted") == "1")]
        return render_page("policies.html", policies=rows)


def _editable(policy: dict) -> str:
    return json.dumps({k: policy[k] for k in POLICY_FIELDS}, ensure_ascii=False, indent=2)


def _parse_policy_json(text: str) -> tuple[dict | None, str | None]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, tr(f"JSON không hợp lệ ở dòng {exc.lineno}, cột {exc.colno}: {exc.msg}",
                        f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    if not isinstance(body, dict):
        return None, tr("Nội dung phải là một đối tượng JSON.", "The content must be a JSON object.")
    return body, None


def _posted_policy() -> tuple[dict | None, str | None, str]:
    """(body, error, JSON text to show again): from the form, or from the JSON view (mode=json; an old
    client posting only "body" is the JSON view too)."""
    from . import policy_form

    if request.form.get("mode") == "form":
        body = policy_form.body(request.form)
        return body, None, json.dumps(body, ensure_ascii=False, indent=2)
    text = request.form.get("body", "")
    body, error = _parse_policy_json(text)
    return body, error, text


def _render_policy(policy: dict | None, body: dict, text: str, error: str | None, status: int = 200):
    from . import policy_form

    with unit_of_work() as s:
        units = list(s.scalars(select(Unit).order_by((Unit.stage != "pilot"), Unit.name_vi)))
    form_ok = policy_form.representable(body)
    return render_page("policy_edit.html", policy=policy, body=body, text=text, error=error, units=units,
                       change_label=lambda c: label(POLICY_CHANGE_LABELS, c),
                       form=policy_form.fields(body, lang()) if form_ok else None,
                       json_open=(not form_ok) or request.form.get("mode") == "json"), status


@bp.route("/policies/new", methods=["GET", "POST"])
@requires("policies.write")
def policy_new():
    from compliance import policies as svc
    from compliance import PolicyInputError

    if request.method == "GET":
        return _render_policy(None, NEW_POLICY_TEMPLATE, json.dumps(NEW_POLICY_TEMPLATE, ensure_ascii=False, indent=2), None)
    body, error, text = _posted_policy()
    status = 400
    if error is None:
        try:
            with unit_of_work() as s:
                policy_id = svc.create_policy(s, body, by=principal()).id
            flash(tr("Đã tạo chính sách.", "Policy created."))
            return redirect(url_for("console.policy_edit", policy_id=policy_id))
        except PolicyInputError as exc:
            error = exc.message(lang())
        except svc.PolicyConflict as exc:
            error, status = exc.message(lang()), 409
    log.warning("policy not created: %s", error)
    return _render_policy(None, body if isinstance(body, dict) else NEW_POLICY_TEMPLATE, text, error, status)


@bp.route("/policies/<int:policy_id>", methods=["GET", "POST"])
@requires("policies.read")
def policy_edit(policy_id):
    from compliance import policies as svc
    from compliance import PolicyInputError

    error, text, body, status = None, None, None, 200
    if request.method == "POST":
        if not can("policies.write"):
            g.refused_permission = "policies.write"
            abort(403)
        body, error, text = _posted_policy()
        status = 400
        if error is None:
            # Optimistic concurrency: the version the editor was loaded at; a concurrent edit → 409.
            body["version"] = request.form.get("version", type=int)
            try:
                with unit_of_work() as s:
                    if request.form.get("action") == "delete":
                        svc.delete_policy(s, policy_id, by=principal())
                    else:
                        svc.update_policy(s, policy_id, body, by=principal())
                flash(tr("Đã lưu chính sách (phiên bản mới).", "Policy saved (new version)."))
                return redirect(url_for("console.policy_edit", policy_id=policy_id))
            except svc.PolicyNotFound:
                abort(404)
            except PolicyInputError as exc:
                error = exc.message(lang())
            except svc.PolicyConflict as exc:
                error, status = exc.message(lang()), 409
            body.pop("version", None)
        log.warning("policy %s not saved: %s", policy_id, error)
    with unit_of_work() as s:
        try:
            policy = svc.policy_dict(s, svc.get_policy(s, policy_id, include_deleted=True), versions=True)
        except svc.PolicyNotFound:
            abort(404)
    if not isinstance(body, dict):
        body = {k: policy[k] for k in POLICY_FIELDS}
    return _render_policy(policy, body, text or _editable(policy), error, status)


# ------------------------------------------------------------------ documents and classification
@bp.route("/documents", methods=["GET", "POST"])
@requires("documents.read")
def documents():
    from document_gateway import policy as gw_policy
    from document_gateway import service as gw
    from document_gateway import CLASSIFICATIONS, LEADER_ROLES, Document

    error = None
    if request.method == "POST":
        if not can("documents.admin"):
            abort(403)
        public_id = request.form.get("document", "")
        action = request.form.get("action")
        try:
            with unit_of_work() as s:
                doc = s.scalar(select(Document).where(Document.public_id == public_id))
                if doc is None:
                    abort(404)
                if action == "classify":
                    integrations.set_classification(s, doc, request.form.get("classification", ""), by=principal())
                elif action == "withdraw":
                    integrations.withdraw_document(s, doc, by=principal())
                else:
                    abort(400)
            flash(tr("Đã cập nhật tài liệu.", "Document updated."))
            return redirect(url_for("console.documents", **request.args))
        except gw.GatewayError as exc:
            error = exc.message(lang())
    page, offset = _page_args()
    classification = request.args.get("classification", "")
    with unit_of_work() as s:
        stmt = select(Document)
        if classification in CLASSIFICATIONS:
            stmt = stmt.where(Document.classification == classification)
        if request.args.get("withdrawn") != "1":
            stmt = stmt.where(Document.withdrawn_at.is_(None))
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = list(s.scalars(stmt.order_by(Document.id.desc()).limit(PAGE_SIZE).offset(offset)))
        units = {u.id: u for u in s.scalars(select(Unit))}
        matrix = {r: {c: gw_policy.classification_allowed(r, c) for c in CLASSIFICATIONS} for r in LEADER_ROLES}
        return render_page("documents.html", docs=rows, total=total, page=page, pages=max(1, math.ceil(total / PAGE_SIZE)),
                           units=units, classifications=CLASSIFICATIONS, roles=LEADER_ROLES, matrix=matrix,
                           f={"classification": classification}, error=error,
                           can_classify=integrations.can_set_classification()), (400 if error else 200)


# ------------------------------------------------------------------ gateway audit log
def _parse_when(raw: str | None, *, end: bool = False) -> dt.datetime | None:
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if len(raw) == 10 and end:  # a date alone in "until" includes that whole day
        value += dt.timedelta(days=1)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@bp.get("/audit")
@requires("audit.read")
def audit():
    from document_gateway import GatewayAuditEvent

    page, offset = _page_args()
    f = {k: request.args.get(k, "").strip() for k in ("device", "leader", "decision", "reason", "since", "until")}
    with unit_of_work() as s:
        stmt = select(GatewayAuditEvent)
        if f["device"]:
            stmt = stmt.where(GatewayAuditEvent.device_udid == f["device"])
        if f["leader"].isdigit():
            stmt = stmt.where(GatewayAuditEvent.leader_id == int(f["leader"]))
        elif f["leader"]:
            stmt = stmt.where(GatewayAuditEvent.leader_name.contains(f["leader"], autoescape=True))
        if f["decision"] in ("allow", "deny"):
            stmt = stmt.where(GatewayAuditEvent.decision == f["decision"])
        if f["reason"]:
            stmt = stmt.where(GatewayAuditEvent.reason_code == f["reason"])
        since, until = _parse_when(f["since"]), _parse_when(f["until"], end=True)
        if since:
            stmt = stmt.where(GatewayAuditEvent.at >= since)
        if until:
            stmt = stmt.where(GatewayAuditEvent.at < until)
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = list(s.scalars(stmt.order_by(GatewayAuditEvent.id.desc()).limit(PAGE_SIZE).offset(offset)))
        reasons = list(s.scalars(select(GatewayAuditEvent.reason_code).distinct().order_by(GatewayAuditEvent.reason_code)))
        chain = None
        if request.args.get("verify") == "1":
            from document_gateway import audit as gw_audit

            chain = gw_audit.chain_status(s, instance())
        return render_page("audit.html", rows=rows, total=total, page=page, pages=max(1, math.ceil(total / PAGE_SIZE)),
                           f=f, reasons=reasons, chain=chain)


# ------------------------------------------------------------------ reports
@bp.get("/reports")
@requires("reports.read")
def reports():
    with unit_of_work() as s:
        rows = integrations.list_reports(s)
        return render_page("reports.html", reports=rows, kinds=integrations.KINDS, formats=integrations.FORMATS,
                           status_label=report_status_label,
                           default_month=integrations.previous_month(), default_year=dt.date.today().year - 1)


@bp.post("/reports/generate")
@requires("reports.write")
def report_generate():
    kind = request.form.get("kind", "monthly")
    period = request.form.get("period", "").strip()
    report_lang = request.form.get("lang", lang())
    formats = request.form.getlist("formats") or ["pdf"]
    try:
        report_id = integrations.start_generation(instance(), dispatcher(), kind=kind, period=period, lang=report_lang,
                                                    formats=formats, by=principal())
    except integrations.ReportRequestError as exc:
        flash(exc.message(lang()), "error")
        return redirect(url_for("console.reports")), 303
    flash(tr("Đã bắt đầu lập báo cáo; trang sẽ tự cập nhật khi xong.",
             "Report generation started; this page updates when it is done."))
    return redirect(url_for("console.reports", watch=report_id)), 303


@bp.get("/reports/<int:report_id>/status.json")
@requires("reports.read")
def report_status(report_id):
    with unit_of_work() as s:
        info = integrations.report_info(s, report_id)
    if info is None:
        abort(404)
    info["label"] = report_status_label(info["status"], info["provisional"])
    return jsonify(info)


REPORT_STATUS = {"pending": ("Đang chờ", "Pending"), "running": ("Đang lập", "Generating"),
                 "done": ("Đã lập", "Done"), "failed": ("Không lập được", "Failed")}


def report_status_label(status: str, provisional: bool = False) -> str:
    text = label(REPORT_STATUS, status)
    if status == "done" and provisional:
        text += tr(" (tạm tính: kỳ báo cáo chưa kết thúc)", " (provisional: the period has not ended)")
    return text


@bp.get("/reports/<int:report_id>/<fmt>")
@requires("reports.read")
def report_download(report_id, fmt):
    with unit_of_work() as s:
        found = integrations.report_file(s, instance(), report_id, fmt)
    if found is None:
        abort(404)
    path, mimetype, name = found
    return send_file(path, mimetype=mimetype, as_attachment=True, download_name=name, max_age=0)


# ------------------------------------------------------------------ security events
SEVERITY_LABELS = {"critical": ("Nghiêm trọng", "Critical"), "high": ("Cao", "High"),
                   "warning": ("Cảnh báo", "Warning"), "info": ("Thông tin", "Information")}


@bp.get("/security-events")
@requires("security.read")
def security_events_page():
    from ipad_mdm import security_events as sev

    page, offset = _page_args()
    open_only = request.args.get("open") == "1"
    with unit_of_work() as s:
        total, rows = sev.query(s, limit=PAGE_SIZE, offset=offset, open_only=open_only)
        events = [sev.to_dict(e) for e in rows]
    return render_page("security_events.html", events=events, total=total, page=page,
                       pages=max(1, math.ceil(total / PAGE_SIZE)), f={"open": "1" if open_only else ""},
                       severity=lambda v: SEVERITY_LABELS.get(v, (v, v))[0 if lang() == "vi" else 1])


@bp.post("/security-events/<int:event_id>/acknowledge")
@requires("security.write")
def security_event_acknowledge(event_id: int):
    from ipad_mdm import security_events as sev

    note = request.form.get("note", "").strip()[:2000]
    with unit_of_work() as s:
        try:
            sev.acknowledge(s, event_id, by=principal(), note=note)
        except sev.EventNotFound:
            abort(404)
    flash(tr(f"Đã xác nhận xử lý sự kiện số {event_id}.", f"Event {event_id} acknowledged."), "ok")
    return redirect(url_for("console.security_events_page"))
