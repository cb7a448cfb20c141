"""Handover workflow pages: register → enrollment QR → enrolled → assign → minute → training → in service,
and back: return, retire."""
from __future__ import annotations

import math

from flask import Response, abort, flash, g, jsonify, redirect, request, url_for
from sqlalchemy import func, select

from ipad_mdm.models import Unit
from ipad_mdm.web import hooks, instance, int_arg, push_after_commit, unit_of_work

from . import handover, pdf
from .models import DeviceRecord, HandoverEvent
from .views import PAGE_SIZE, _page_args
from .web import bp, can, label, lang, render_page, requires, tr


def _record_or_404(s, record_id: int) -> DeviceRecord:
    record = s.get(DeviceRecord, record_id)
    if record is None:
        abort(404)
    return record


@bp.get("/handover")
@requires("handover.read")
def handover_list():
    page, offset = _page_args()
    state = request.args.get("state", "")
    unit = int_arg("unit")
    q = request.args.get("q", "").strip().upper()
    with unit_of_work() as s:
        stmt = select(DeviceRecord)
        if state in handover.STATES:
            stmt = stmt.where(DeviceRecord.state == state)
        if unit:
            stmt = stmt.where(DeviceRecord.unit_id == unit)
        if q:
            stmt = stmt.where(DeviceRecord.serial_number.contains(q, autoescape=True))
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = list(s.scalars(stmt.order_by(DeviceRecord.id.desc()).limit(PAGE_SIZE).offset(offset)))
        units = {u.id: u for u in s.scalars(select(Unit).order_by(Unit.name_vi))}
        return render_page("handover_list.html", rows=rows, total=total, page=page,
                           pages=max(1, math.ceil(total / PAGE_SIZE)), units=units, states=handover.STATES,
                           f={"state": state, "unit": unit or "", "q": q})


@bp.route("/handover/new", methods=["GET", "POST"])
@requires("handover.write")
def handover_new():
    error = None
    if request.method == "POST":
        with unit_of_work() as s:
            try:
                record = handover.register_device(s, serial_number=request.form.get("serial_number", ""),
                                                  model=request.form.get("model", ""),
                                                  unit=int_arg("unit_id", args=request.form),
                                                  by=g.user.username, note=request.form.get("note", ""))
                record_id = record.id
            except handover.TransitionRefused as exc:
                error = exc.message(lang())
        if error is None:
            flash(tr("Đã đăng ký thiết bị.", "Device registered."))
            return redirect(url_for("console.handover_record", record_id=record_id))
    with unit_of_work() as s:
        units = list(s.scalars(select(Unit).order_by((Unit.stage != "pilot"), Unit.name_vi)))
        return render_page("handover_new.html", units=units, error=error, form=request.form), (400 if error else 200)


@bp.get("/handover/<int:record_id>")
@requires("handover.read")
def handover_record(record_id):
    return _render_record(record_id)


def _render_record(record_id: int, error: str | None = None):
    from document_gateway import Leader
    from usb_tokens import service as tokens

    with unit_of_work() as s:
        record = _record_or_404(s, record_id)
        device = handover.device_of(s, record)
        leader = s.get(Leader, record.leader_id) if record.leader_id else None
        leaders = list(s.scalars(select(Leader).where(Leader.active.is_(True)).order_by(Leader.full_name)))
        url = handover.enrollment_url(instance().fernet(), record) if can("handover.write") else None
        units = list(s.scalars(select(Unit).order_by((Unit.stage != "pilot"), Unit.name_vi)))
        return render_page("handover_record.html", record=record, device=device, leader=leader, leaders=leaders,
                           units=units, tokens_available=tokens.available(s) if can("tokens.write") else [],
                           tokens_held=tokens.held_by(s, leader.id) if leader and can("tokens.write") else [],
                           unit=s.get(Unit, record.unit_id) if record.unit_id is not None else None, events=list(record.events), enrollment_url=url,
                           actions=handover.allowed_actions(record.state), error=error)


@bp.get("/handover/<int:record_id>/status.json")
@requires("handover.read")
def handover_status(record_id):
    """Polled by the record page while it waits for the iPad to enroll (or to acknowledge the erase)."""
    with unit_of_work() as s:
        record = _record_or_404(s, record_id)
        device = handover.device_of(s, record)
        return jsonify({"state": record.state, "label": handover.STATE_LABELS[record.state][0 if lang() == "vi" else 1],
                        "device": {"udid": device.udid, "enrollment_state": device.enrollment_state} if device else None})


@bp.get("/handover/<int:record_id>/qr.svg")
@requires("handover.write")
def handover_qr(record_id):
    import segno

    with unit_of_work() as s:
        record = _record_or_404(s, record_id)
        url = handover.enrollment_url(instance().fernet(), record)
    if url is None:
        abort(404)
    import io

    buf = io.BytesIO()
    segno.make(url, error="m").save(buf, kind="svg", scale=5, border=2, xmldecl=True)
    return Response(buf.getvalue(), mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})


@bp.get("/handover/<int:record_id>/minute/<int:event_id>.pdf")
@requires("handover.read")
def handover_minute(record_id, event_id):
    with unit_of_work() as s:
        event = s.get(HandoverEvent, event_id)
        if event is None or event.record_id != record_id or not event.data or event.data.get("kind") not in ("handover", "return"):
            abort(404)
        data = dict(event.data)
    body = pdf.minute_pdf(data, event_id=event_id)
    name = f"bien-ban-{'ban-giao' if data['kind'] == 'handover' else 'hoan-tra'}-{data['serial_number']}-{event_id}.pdf"
    return Response(body, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


def _ids(values) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values if v)
    except ValueError:
        raise handover.TransitionRefused("USB token đã chọn không hợp lệ.", "Invalid USB token choice.") from None


@bp.post("/handover/<int:record_id>/<action>")
@requires("handover.write")
def handover_action(record_id, action):
    from document_gateway import Leader

    by, note = g.user.username, request.form.get("note", "")
    try:
        with unit_of_work() as s:
            record = _record_or_404(s, record_id)
            if action == "enroll_token":
                handover.create_enrollment_token(s, instance().settings, instance().fernet(), record, by=by)
            elif action == "assign":
                leader = s.get(Leader, int_arg("leader_id", args=request.form) or 0)
                if leader is None:
                    raise handover.TransitionRefused("Vui lòng chọn lãnh đạo.", "Choose a leader.")
                handover.assign(s, record, leader, by=by)
            elif action == "hand_over":
                handover.hand_over(s, record, by=by, by_name=g.user.full_name, note=note, details=request.form,
                                   usb_token_ids=_ids(request.form.getlist("usb_token_id")))
            elif action == "training":
                handover.training_done(s, record, by=by, note=note)
            elif action == "in_service":
                handover.put_in_service(s, record, by=by, note=note)
            elif action == "return":
                handover.return_device(s, record, by=by, by_name=g.user.full_name, note=note, details=request.form,
                                       usb_token_ids=_ids(request.form.getlist("usb_token_id")))
            elif action == "retire":
                handover.retire(s, record, by=by, confirm_serial=request.form.get("confirm_serial", ""), note=note)
                push_after_commit(s, record.device_id)
            elif action == "force_retire":
                handover.force_retire(s, hooks(), record, by=by, confirm_serial=request.form.get("confirm_serial", ""),
                                      note=note)
            elif action == "set_unit":
                handover.set_unit(s, hooks(), record, int_arg("unit_id", args=request.form), by=by)
            elif action == "cancel":
                handover.cancel(s, record, by=by, note=note)
            else:
                abort(404)
    except handover.TransitionRefused as exc:
        # The transaction was rolled back; show the record as it is, with the reason (409 Conflict).
        return _render_record(record_id, error=exc.message(lang())), 409
    flash(tr("Đã cập nhật: ", "Updated: ") + handover.ACTION_LABELS[action][0 if lang() == "vi" else 1])
    return redirect(url_for("console.handover_record", record_id=record_id)), 303


# ------------------------------------------------------------------ enrollment tokens
TOKEN_STATE_LABELS = {"usable": ("Chưa dùng", "Not used yet"), "profile_fetched": ("iPad đang cài đặt", "iPad enrolling"),
                      "used": ("Đã dùng", "Used"), "expired": ("Đã hết hạn", "Expired"), "revoked": ("Đã huỷ", "Cancelled")}


@bp.get("/enrollment-tokens")
@requires("handover.read")
def enrollment_tokens():
    """Enrollment tokens (console, CLI or API made): which could still enroll an iPad, and cancelling one
    (a lost QR code or printed link) at once. The token itself is never shown again."""
    from mdm import service as mdm_service

    page, offset = _page_args()
    include_spent = request.args.get("all") == "1"
    with unit_of_work() as s:
        total, rows = mdm_service.list_enrollment_tokens(s, include_spent=include_spent, limit=PAGE_SIZE, offset=offset)
        units = {u.code: u for u in s.scalars(select(Unit))}
    return render_page("enrollment_tokens.html", rows=rows, total=total, page=page, units=units,
                       pages=max(1, math.ceil(total / PAGE_SIZE)), f={"all": "1" if include_spent else ""},
                       token_state_label=lambda v: label(TOKEN_STATE_LABELS, v), creator=_creator)


def _creator(by: str | None) -> str:
    """Who made a token, for people: an account's name, "Dòng lệnh (CLI)", "API: <token name>"."""
    by = by or ""
    if by == "cli":
        return tr("Dòng lệnh (CLI)", "Command line")
    if by.startswith(("user:", "console:")):
        return by.split(":", 1)[1]
    if by.startswith("api:"):
        return "API: " + by.split(":", 1)[1]
    return by


@bp.post("/enrollment-tokens/<int:token_id>/revoke")
@requires("handover.write")
def enrollment_token_revoke(token_id):
    from mdm import service as mdm_service

    try:
        with unit_of_work() as s:
            mdm_service.revoke_enrollment_token(s, token_id)
    except mdm_service.NotFound:
        abort(404)
    except ValueError:
        flash(tr("Mã này đã được iPad sử dụng; không huỷ được. Để thu hồi quyền của iPad, vui lòng loại bỏ thiết bị.",
                 "An iPad has already used this token; to take the iPad's access away, retire it."), "error")
        return redirect(url_for("console.enrollment_tokens")), 303
    flash(tr(f"Đã huỷ mã cài đặt số {token_id}: mã không còn dùng được.", f"Enrollment token #{token_id} cancelled."))
    return redirect(url_for("console.enrollment_tokens")), 303
