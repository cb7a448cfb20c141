"""The USB token registry in the console: the list (by state, certificates expiring), registering a
token with its certificate file, a token's page with its history and actions (hand over, return,
report lost with the revocation request, confirm revocation)."""
from __future__ import annotations

import datetime as dt
import math

from flask import Response, abort, flash, g, redirect, request, url_for
from sqlalchemy import func, select

from ipad_mdm.db import utcnow
from ipad_mdm.decree30 import LOCAL_TZ
from ipad_mdm.models import Unit
from ipad_mdm.web import int_arg, unit_of_work

from .views import PAGE_SIZE, _page_args
from .web import bp, can, label, lang, render_page, requires, tr

MAX_CERTIFICATE_UPLOAD = 64 * 1024
# Who may take each step on a token (the page offers only these; the endpoint checks them).
ACTION_PERMISSIONS = {"hand_over": "tokens.write", "return": "tokens.write", "lost": "tokens.lost",
                      "revoked": "tokens.revoked", "certificate": "tokens.write"}


def _helpers():
    from usb_tokens import service

    return {"token_state_label": lambda v: label(service.STATE_LABELS, v),
            "token_action_label": lambda v: label(service.ACTION_LABELS, v)}


@bp.get("/usb-tokens")
@requires("tokens.read")
def usb_tokens():
    from document_gateway import Leader
    from usb_tokens import UsbToken, service

    page, offset = _page_args()
    state = request.args.get("state", "")
    expiring = request.args.get("expiring", "") == "30"
    now = utcnow()
    with unit_of_work() as s:
        stmt = select(UsbToken)
        if state in service.STATES:
            stmt = stmt.where(UsbToken.state == state)
        if expiring:
            stmt = stmt.where(service.expiring_condition(now, 30))
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = list(s.scalars(stmt.order_by(UsbToken.serial_number).limit(PAGE_SIZE).offset(offset)))
        leaders = {x.id: x for x in s.scalars(select(Leader).where(
            Leader.id.in_({r.holder_leader_id for r in rows if r.holder_leader_id})))}
        return render_page("usb_tokens.html", rows=rows, total=total, page=page, leaders=leaders,
                           pages=max(1, math.ceil(total / PAGE_SIZE)), states=service.STATES,
                           days_left=lambda t: service.days_left(t, now),
                           f={"state": state, "expiring": "30" if expiring else ""}, **_helpers())


def _certificate_upload() -> bytes | None:
    upload = request.files.get("certificate")
    if upload is None or not upload.filename:
        return None
    return upload.read(MAX_CERTIFICATE_UPLOAD + 1)  # one byte over: the service refuses it as too large


@bp.route("/usb-tokens/new", methods=["GET", "POST"])
@requires("tokens.write")
def usb_token_new():
    from usb_tokens import service

    error = None
    if request.method == "POST":
        with unit_of_work() as s:
            try:
                token = service.register(s, serial_number=request.form.get("serial_number", ""),
                                         kind=request.form.get("kind", ""), certificate=_certificate_upload(),
                                         unit_id=int_arg("unit_id", args=request.form) or None,
                                         by=g.user.username, note=request.form.get("note", ""))
                token_id = token.id
            except service.TokenRefused as exc:
                error = exc.message(lang())
        if error is None:
            flash(tr("Đã nhập USB token vào danh sách quản lý.", "Token registered."))
            return redirect(url_for("console.usb_token_page", token_id=token_id), 303)
    with unit_of_work() as s:
        units = list(s.scalars(select(Unit).order_by(Unit.name_vi)))
        return render_page("usb_token_new.html", units=units, error=error, form=request.form), (400 if error else 200)


@bp.get("/usb-tokens/<int:token_id>")
@requires("tokens.read")
def usb_token_page(token_id):
    return _render_token(token_id)


def _render_token(token_id: int, error: str | None = None):
    from document_gateway import Leader
    from usb_tokens import service

    now = utcnow()
    with unit_of_work() as s:
        token = service.get(s, token_id)
        if token is None:
            abort(404)
        holder = s.get(Leader, token.holder_leader_id) if token.holder_leader_id else None
        leaders = list(s.scalars(select(Leader).where(Leader.active.is_(True)).order_by(Leader.full_name)))
        unit = s.get(Unit, token.unit_id) if token.unit_id else None
        actions = [a for a in service.allowed_actions(token.state) if can(ACTION_PERMISSIONS[a])]
        return render_page("usb_token.html", token=token, holder=holder, leaders=leaders, unit=unit,
                           events=list(token.events), actions=actions, days_left=service.days_left(token, now),
                           error=error, today=now.astimezone(LOCAL_TZ).date().isoformat(), **_helpers())


@bp.post("/usb-tokens/<int:token_id>/<action>")
@requires("tokens.read")
def usb_token_action(token_id, action):
    from document_gateway import Leader
    from usb_tokens import service

    needed = ACTION_PERMISSIONS.get(action)
    if needed is None:
        abort(404)
    if not can(needed):
        g.refused_permission = needed
        abort(403)
    by, note = g.user.username, request.form.get("note", "")
    letter_event = None
    try:
        with unit_of_work() as s:
            token = service.get(s, token_id)
            if token is None:
                abort(404)
            if action == "hand_over":
                leader = s.get(Leader, int_arg("leader_id", args=request.form) or 0)
                if leader is None or not leader.active:
                    raise service.TokenRefused("Vui lòng chọn lãnh đạo.", "Choose a leader.")
                service.hand_over(s, token, leader, by=by, note=note)
            elif action == "return":
                service.return_token(s, token, by=by, note=note)
            elif action == "lost":
                lost_on = _date(request.form.get("lost_on", ""))
                holder = s.get(Leader, token.holder_leader_id) if token.holder_leader_id else None
                letter_event = service.report_lost(s, token, by=by, by_name=g.user.full_name,
                                                   circumstances=request.form.get("circumstances", ""),
                                                   lost_on=lost_on, holder_name=holder.full_name if holder else "").id
            elif action == "revoked":
                service.mark_revoked(s, token, by=by, note=note)
            elif action == "certificate":
                data = _certificate_upload()
                if not data:
                    raise service.TokenRefused("Vui lòng chọn tệp chứng thư số.", "Choose a certificate file.")
                service.load_certificate(s, token, data, by=by)
    except service.TokenRefused as exc:
        return _render_token(token_id, error=exc.message(lang())), 409
    if letter_event:
        flash(tr("Đã ghi nhận USB token bị mất và lập công văn đề nghị thu hồi chứng thư số. Vui lòng tải công văn, "
                 "trình ký và gửi tổ chức cung cấp dịch vụ.",
                 "The loss is recorded and the revocation request drawn up. Download it, have it signed and send it "
                 "to the issuing CA."))
    else:
        flash(tr("Đã cập nhật: ", "Updated: ") + label(service.ACTION_LABELS, action))
    return redirect(url_for("console.usb_token_page", token_id=token_id), 303)


def _date(value: str) -> dt.date | None:
    from usb_tokens import service

    value = (value or "").strip()
    if not value:
        return None
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise service.TokenRefused("Ngày mất không hợp lệ (dd/mm/yyyy).", "The date of the loss is not valid.")


@bp.get("/usb-tokens/<int:token_id>/letter/<int:event_id>.pdf")
@requires("tokens.read")
def usb_token_letter(token_id, event_id):
    from usb_tokens import UsbTokenEvent, letter

    with unit_of_work() as s:
        event = s.get(UsbTokenEvent, event_id)
        if event is None or event.token_id != token_id or event.action != "lost" or not event.data:
            abort(404)
        data = dict(event.data)
    body = letter.revocation_request_pdf(data)
    name = f"de-nghi-thu-hoi-chung-thu-so-{data.get('serial_number', token_id)}-{data.get('number', event_id)}.pdf"
    return Response(body, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
