"""Declarative management pages: the declarations (list, create, new version, assign) and, per
declaration, what the iPads report of it. The device page shows each iPad's own states."""
from __future__ import annotations

import json

from flask import abort, flash, redirect, request, url_for
from sqlalchemy import func, select

from ipad_mdm.web import unit_of_work

from .web import bp, can, label, lang, principal, render_page, requires, tr

KIND_LABELS = {"activation": ("Kích hoạt", "Activation"), "configuration": ("Cấu hình", "Configuration"),
               "asset": ("Tài nguyên", "Asset"), "management": ("Quản lý", "Management")}
VALID_LABELS = {"valid": ("Hợp lệ", "Valid"), "invalid": ("Không hợp lệ", "Invalid"),
                "unknown": ("Chưa xác định", "Unknown")}
NEW_TEMPLATE = {"identifier": "vpcp.passcode", "type": "passcode.settings", "display_name": "Mật mã mở khoá",
                "description": "", "payload": {"RequirePasscode": True, "MinimumLength": 6}}


def _error(exc) -> str:
    from declarative import DeclarationError

    if isinstance(exc, DeclarationError):
        return tr(f"Khai báo không hợp lệ ở trường «{exc.key}». Vui lòng kiểm tra lại giá trị.",
                  f"Invalid declaration ({exc.key}): {exc.message}")
    return tr("Không thực hiện được yêu cầu. Vui lòng kiểm tra lại định danh, đơn vị hoặc thiết bị.", str(exc))


def _sync(s, device_ids) -> int | None:
    from flask import current_app

    from declarative import renderer_of, sync

    return sync.sync_after_change(s, device_ids, renderer_of(current_app), requested_by=principal())["devices_synced"]


def _synced_note(n) -> str:
    if n is None:
        return tr("các thiết bị liên quan sẽ được yêu cầu đồng bộ trong ít phút.", "the iPads concerned are being asked to sync.")
    return tr(f"{n} thiết bị được yêu cầu đồng bộ.", f"{n} device(s) asked to sync.")


@bp.get("/declarations")
@requires("devices.read")
def declarations():
    from declarative import DeclarationState, service

    with unit_of_work() as s:
        health = {}
        for ident, valid, n in s.execute(select(DeclarationState.identifier, DeclarationState.valid, func.count())
                                         .group_by(DeclarationState.identifier, DeclarationState.valid)):
            health.setdefault(ident, {})[valid] = n
        rows = [(d, health.get(d.identifier, {})) for d in service.list_all(s)]
        return render_page("declarations.html", rows=rows, kind=lambda k: label(KIND_LABELS, k))


@bp.route("/declarations/new", methods=["GET", "POST"])
@requires("declarations.write")
def declaration_new():
    from declarative import Conflict, DeclarationError, NotFound, catalog, service

    text = request.form.get("body") if request.method == "POST" else json.dumps(NEW_TEMPLATE, ensure_ascii=False, indent=2)
    error = None
    if request.method == "POST":
        try:
            body = json.loads(text or "")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            error = tr("Nội dung phải là một đối tượng JSON hợp lệ.", "The content must be a valid JSON object.")
        else:
            try:
                with unit_of_work() as s:
                    decl = service.create(s, identifier=body.get("identifier"), type=body.get("type"),
                                          display_name=body.get("display_name"), payload=body.get("payload"),
                                          source=body.get("source"), description=body.get("description") or None,
                                          created_by=principal())
                    ident = decl.identifier
                flash(tr("Đã tạo khai báo.", "Declaration created."))
                return redirect(url_for("console.declaration_page", identifier=ident))
            except (DeclarationError, NotFound, Conflict) as exc:
                error = _error(exc)
    types = [catalog.TYPES[t].short for t in catalog.OPERATOR_TYPES]
    return render_page("declaration.html", decl=None, text=text, error=error, types=types,
                       kind=lambda k: label(KIND_LABELS, k)), (400 if error else 200)


@bp.route("/declarations/<identifier>", methods=["GET", "POST"])
@requires("devices.read")
def declaration_page(identifier):
    from declarative import Conflict, DeclarationError, DeclarationState, NotFound, describe_all, service
    from mdm import Device

    error, text = None, None
    with unit_of_work() as s:
        try:
            decl = service.get(s, identifier)
        except NotFound:
            abort(404)
        if request.method == "POST":
            if not can("declarations.write"):
                abort(403)
            action = request.form.get("action")
            try:
                if action == "version":
                    text = request.form.get("body", "")
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        raise DeclarationError("payload", "payload is not JSON") from None
                    service.new_version(s, decl, payload=payload, created_by=principal())
                    n = _sync(s, None)
                    flash(tr("Đã lưu phiên bản mới; ", "New version saved; ") + _synced_note(n))
                elif action in ("assign", "unassign"):
                    target = (request.form.get("target") or "").strip()
                    kw = {"all": {"all_devices": True}, "unit": {"units": [target]},
                          "device": {"devices": [target]}}.get(request.form.get("target_kind"))
                    if kw is None:
                        abort(400)
                    if action == "assign":
                        service.assign(s, decl, predicate=request.form.get("predicate") or None,
                                       created_by=principal(), **kw)
                        n = _sync(s, service.assigned_device_ids(s, decl))
                    else:
                        reach = service.assigned_device_ids(s, decl)
                        service.unassign(s, decl, **kw)
                        n = _sync(s, reach)
                    flash(tr("Đã cập nhật phạm vi áp dụng; ", "Assignment updated; ") + _synced_note(n))
                else:
                    abort(400)
                return redirect(url_for("console.declaration_page", identifier=identifier))
            except (DeclarationError, NotFound, Conflict) as exc:
                s.rollback()
                error = _error(exc)
        states = s.execute(select(DeclarationState, Device.udid, Device.device_name).join(
            Device, Device.id == DeclarationState.device_id).where(DeclarationState.identifier == identifier)
            .order_by(DeclarationState.valid, Device.udid).limit(500)).all()
        ver = service.current(decl)
        text = text or json.dumps(ver.payload, ensure_ascii=False, indent=2)
        return render_page("declaration.html", decl=decl, version=ver, text=text, error=error, states=states,
                           kind=lambda k: label(KIND_LABELS, k), validity=lambda v: label(VALID_LABELS, v),
                           reasons=lambda r: describe_all(r, lang())), \
            (400 if error else 200)
