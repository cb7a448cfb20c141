"""Console pages: sign-in, TOTP, language, fleet overview, devices, commands, units, leaders, own device."""
from __future__ import annotations

import logging
import math
import re
import secrets
import time
from urllib.parse import urlsplit

from flask import abort, flash, g, jsonify, redirect, request, session, url_for
from sqlalchemy import func, or_, select

from ipad_mdm.models import Unit
from ipad_mdm.web import hooks, instance, int_arg, paging, push_after_commit, unit_of_work
from mdm import protocol
from mdm import service as mdm_service
from mdm import Device

from ipad_mdm.db import utcnow

from . import accounts, fleet, handover
from .models import DeviceRecord, User
from .web import (
    COMMAND_STATUS_LABELS,
    LANGS,
    _end_session,
    bp,
    can,
    command_label,
    label,
    lang,
    principal,
    render_page,
    requires,
    start_session,
    tr,
)

PAGE_SIZE = 25
log = logging.getLogger("console.views")

# Commands offered on the device page, and the permission each needs. InstallProfile and ClearPasscode
# are sent by the server itself (profiles package, unlock flow), never typed in here.
CONSOLE_COMMANDS = {
    "DeviceInformation": "commands.send", "SecurityInfo": "commands.send", "ProfileList": "commands.send",
    "CertificateList": "commands.send", "InstalledApplicationList": "commands.send",
    "DeviceLock": "commands.lock", "EnableLostMode": "commands.lock", "DisableLostMode": "commands.lock",
    "DeviceLocation": "commands.lock",
    "RestartDevice": "commands.power", "ShutDownDevice": "commands.power",
    "EraseDevice": "commands.erase",
}
COMMAND_LABELS = {
    "DeviceInformation": ("Cập nhật thông tin thiết bị", "Refresh device information"),
    "SecurityInfo": ("Cập nhật thông tin bảo mật", "Refresh security information"),
    "ProfileList": ("Cập nhật danh sách hồ sơ cấu hình", "Refresh profile list"),
    "CertificateList": ("Cập nhật danh sách chứng thư", "Refresh certificate list"),
    "InstalledApplicationList": ("Cập nhật danh sách ứng dụng", "Refresh installed apps"),
    "DeviceLock": ("Khoá màn hình thiết bị", "Lock device"),
    "EnableLostMode": ("Bật chế độ mất", "Enable Lost Mode"),
    "DisableLostMode": ("Tắt chế độ mất", "Disable Lost Mode"),
    "DeviceLocation": ("Xác định vị trí (chế độ mất)", "Locate (Lost Mode)"),
    "RestartDevice": ("Khởi động lại", "Restart"),
    "ShutDownDevice": ("Tắt máy", "Shut down"),
    "EraseDevice": ("Xoá toàn bộ dữ liệu (loại bỏ thiết bị)", "Erase all data (retire device)"),
}
# The commands that need the serial number typed again. The brief's three (erase, lock, lost mode) and
# the rest of mdm's DESTRUCTIVE_COMMANDS (restart/shutdown interrupt a leader's work).
CONFIRM_COMMANDS = tuple(c for c in protocol.DESTRUCTIVE_COMMANDS if c in CONSOLE_COMMANDS)


def _page_args() -> tuple[int, int]:
    """(page, offset); an out-of-range page is a 400 (ipad_mdm.web.paging)."""
    _limit, offset = paging(default_limit=PAGE_SIZE, max_limit=PAGE_SIZE)
    return offset // PAGE_SIZE + 1, offset


def _safe_next(target: str | None) -> str:
    # Only local paths inside the console: no open redirect after sign-in.
    if target and target.startswith("/console") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("console.home")


# ------------------------------------------------------------------ sign-in
@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if g.get("user"):
            return redirect(url_for("console.home"))
        return render_page("login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    with instance().database.session() as s:
        result = accounts.check_password(s, username, password)
        user = result.user
        if result.locked_until is not None:
            message = tr(f"Tài khoản tạm khoá do đăng nhập sai nhiều lần; thử lại sau {accounts.LOCKOUT.seconds // 60} phút.",
                         f"The account is locked after too many failed sign-ins; try again in {accounts.LOCKOUT.seconds // 60} minutes.")
            return render_page("login.html", error=message, next=request.form.get("next", "")), 429
        if not result.ok:
            return render_page("login.html", error=tr("Sai tên đăng nhập hoặc mật khẩu.", "Wrong username or password."),
                               next=request.form.get("next", "")), 401
        if result.needs_totp:
            keep_lang = session.get("lang")
            session.clear()
            # New anonymous session for the second step (fresh CSRF token; nothing of the old one).
            session.update(pending_uid=user.id, pending_sv=user.session_version, pending_at=time.time(),
                           next=request.form.get("next", ""), csrf=secrets.token_urlsafe(32))
            if keep_lang:
                session["lang"] = keep_lang
            return redirect(url_for("console.login_totp"))
        s.flush()
        s.expunge(user)
    start_session(user)
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/login/totp", methods=["GET", "POST"])
def login_totp():
    from .web import PENDING_TOTP_TIMEOUT

    uid = session.get("pending_uid")
    if uid is None or time.time() - session.get("pending_at", 0) > PENDING_TOTP_TIMEOUT:
        _end_session()
        return redirect(url_for("console.login"))
    if request.method == "GET":
        return render_page("login_totp.html")
    with instance().database.session() as s:
        user = s.get(User, uid)
        if user is None or not user.active or user.session_version != session.get("pending_sv"):
            _end_session()
            return redirect(url_for("console.login"))
        ok = accounts.verify_totp(user, instance().fernet(), request.form.get("code", ""))
        locked = accounts.is_locked(user)
        s.flush()
        s.expunge(user)
    if not ok:
        if locked:
            _end_session()
            return render_page("login.html", error=tr("Tài khoản tạm khoá do nhập sai nhiều lần.",
                                                      "The account is locked after too many failures.")), 429
        return render_page("login_totp.html", error=tr("Mã xác thực không đúng hoặc đã dùng.",
                                                       "The code is wrong or was already used.")), 401
    target = session.get("next")
    start_session(user)
    return redirect(_safe_next(target))


@bp.post("/logout")
def logout():
    if g.get("user") is not None:
        with instance().database.session() as s:
            user = s.get(User, g.user.id)
            user.session_version += 1  # the signed cookie is dead everywhere, even if someone copied it
    _end_session()
    return redirect(url_for("console.login"))


@bp.post("/lang")
def set_language():
    chosen = request.form.get("lang")
    if chosen in LANGS:
        session["lang"] = chosen
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/account/totp", methods=["GET", "POST"])
@requires()
def account_totp():
    """Enrol an authenticator app: the secret lives in the session (signed, not stored) until the user
    proves it with a code; only then is it encrypted into the database."""
    import segno

    fernet = instance().fernet()
    error = None
    if request.method == "POST":
        action = request.form.get("action")
        with instance().database.session() as s:
            user = s.get(User, g.user.id)
            if action == "disable":
                if not accounts.verify_totp(user, fernet, request.form.get("code", "")):
                    error = tr("Mã xác thực không đúng.", "Wrong code.")
                else:
                    accounts.disable_totp(user)
                    session["sv"] = user.session_version
                    flash(tr("Đã tắt xác thực hai lớp.", "Two-factor authentication turned off."))
                    return redirect(url_for("console.account_totp"))
            else:
                secret = session.get("totp_setup")
                if not secret or not accounts.enable_totp(user, fernet, secret, request.form.get("code", "")):
                    error = tr("Mã xác thực không đúng; kiểm tra đồng hồ của điện thoại và thử lại.",
                               "Wrong code; check the phone's clock and try again.")
                else:
                    session.pop("totp_setup", None)
                    session["sv"] = user.session_version  # this session stays valid, others end
                    flash(tr("Đã bật xác thực hai lớp.", "Two-factor authentication is on."))
                    return redirect(url_for("console.account_totp"))
            enabled = user.totp_enabled
    else:
        enabled = g.user.totp_enabled
    qr_svg = secret = None
    if not enabled:
        secret = session.get("totp_setup") or accounts.new_totp_secret()
        session["totp_setup"] = secret
        uri = accounts.provisioning_uri(secret, g.user.username)
        qr_svg = segno.make(uri, error="m").svg_inline(scale=4)
    return render_page("account_totp.html", enabled=enabled, secret=secret, qr_svg=qr_svg, error=error), \
        (400 if error else 200)


# ------------------------------------------------------------------ overview
@bp.get("/")
@requires()
def home():
    if g.user.role == "leader":
        return redirect(url_for("console.my_device"))
    if not can("dashboard"):
        abort(403)
    from compliance import DeviceVerdict

    with unit_of_work() as s:
        by_state = dict(s.execute(select(DeviceRecord.state, func.count()).group_by(DeviceRecord.state)).all())
        by_mdm = dict(s.execute(select(Device.enrollment_state, func.count()).group_by(Device.enrollment_state)).all())
        by_verdict = dict(s.execute(select(DeviceVerdict.state, func.count()).join(Device, Device.id == DeviceVerdict.device_id)
                                    .where(Device.enrollment_state != "retired").group_by(DeviceVerdict.state)).all())
        units = list(s.scalars(select(Unit).order_by((Unit.stage != "pilot"), Unit.name_vi)))
        per_unit: dict[int, dict[str, int]] = {}
        for unit_id, state, n in s.execute(select(DeviceRecord.unit_id, DeviceRecord.state, func.count())
                                           .group_by(DeviceRecord.unit_id, DeviceRecord.state)):
            per_unit.setdefault(unit_id, {})[state] = n
        now = utcnow()
        return render_page("home.html", by_state=by_state, by_mdm=by_mdm, by_verdict=by_verdict, units=units,
                           per_unit=per_unit, states=handover.STATES, needs=fleet.need_counts(s, now),
                           need_labels=fleet.NEEDS, series=fleet.compliance_series(s, now),
                           other_needs=fleet.other_need_counts(s, now), other_need_labels=fleet.OTHER_NEEDS)


# ------------------------------------------------------------------ devices
@bp.get("/devices")
@requires("devices.read")
def devices():
    from compliance import DeviceVerdict

    page, offset = _page_args()
    f = {k: request.args.get(k, "").strip() for k in ("unit", "state", "verdict", "mdm", "q", "need")}
    with unit_of_work() as s:
        stmt = (select(Device, DeviceRecord, DeviceVerdict.state)
                .outerjoin(DeviceRecord, DeviceRecord.device_id == Device.id)
                .outerjoin(DeviceVerdict, DeviceVerdict.device_id == Device.id))
        if f["unit"].isdigit() and len(f["unit"]) <= 9:
            stmt = stmt.where(Device.unit_id == int(f["unit"]))
        if f["state"] in handover.STATES:
            stmt = stmt.where(DeviceRecord.state == f["state"])
        elif f["state"] == "none":
            stmt = stmt.where(DeviceRecord.id.is_(None))
        if f["verdict"]:
            stmt = stmt.where(DeviceVerdict.state == f["verdict"]) if f["verdict"] != "none" else \
                stmt.where(DeviceVerdict.state.is_(None))
        if f["mdm"]:
            stmt = stmt.where(Device.enrollment_state == f["mdm"])
        if f["need"] in fleet.NEEDS:
            stmt = stmt.where(fleet.need_condition(f["need"], utcnow()))
        if f["q"]:
            like = "%" + f["q"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(or_(Device.serial_number.ilike(like, escape="\\"), Device.device_name.ilike(like, escape="\\"),
                                  Device.udid.ilike(like, escape="\\")))
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        rows = s.execute(stmt.order_by(Device.id.desc()).limit(PAGE_SIZE).offset(offset)).all()
        units = {u.id: u for u in s.scalars(select(Unit).order_by(Unit.name_vi))}
        return render_page("devices.html", rows=rows, total=total, page=page, pages=max(1, math.ceil(total / PAGE_SIZE)),
                           f=f, units=units, states=handover.STATES, need_labels=fleet.NEEDS)


def _leader_device_ids(s, user: User) -> set[int]:
    from document_gateway import DeviceAssignment

    if user.leader_id is None:
        return set()
    return set(s.scalars(select(DeviceAssignment.device_id).where(DeviceAssignment.leader_id == user.leader_id,
                                                                 DeviceAssignment.returned_at.is_(None))))


def _device_or_404(s, udid: str) -> Device:
    device = s.scalar(select(Device).where(Device.udid == udid))
    if device is None:
        abort(404)
    if g.user.role == "leader":
        # A leader sees only the iPad handed to them; another leader's device does not exist for them.
        if device.id not in _leader_device_ids(s, g.user):
            abort(404)
    elif not can("devices.read"):
        abort(403)
    return device


@bp.get("/devices/<udid>")
@requires()
def device_page(udid):
    with unit_of_work() as s:
        device = _device_or_404(s, udid)
        detail = mdm_service.device_detail(s, hooks(), device)
        commands = [mdm_service.command_detail(s, c) for c in mdm_service.device_commands(s, device, limit=50)] \
            if g.user.role != "leader" else []
        record = handover.active_record_for_device(s, device.id)
        unit = s.get(Unit, device.unit_id) if device.unit_id else None
        offered = [c for c, perm in CONSOLE_COMMANDS.items() if can(perm)]
        return render_page("device.html", device=device, d=detail, commands=commands, record=record, unit=unit,
                           offered=offered, labels=COMMAND_LABELS, confirm=CONFIRM_COMMANDS)


@bp.post("/devices/<udid>/re-enroll")
@requires("devices.reenroll")
def device_reenroll(udid):
    """IT authorises an erased or replaced iPad to enroll again: the one-time URL is shown once."""
    with unit_of_work() as s:
        device = _device_or_404(s, udid)
        result = mdm_service.create_reenrollment(s, instance().settings, device.udid, created_by=principal())
    log.warning("re-enrollment of %s authorised by %s (token #%s)", udid, principal(), result["id"])
    return render_page("reenroll.html", udid=udid, result=result)


@bp.get("/commands/<command_uuid>.json")
@requires("devices.read")
def command_status(command_uuid):
    with unit_of_work() as s:
        try:
            cmd = mdm_service.get_command(s, command_uuid)
        except mdm_service.NotFound:
            abort(404)
        return jsonify({"uuid": cmd.uuid, "status": cmd.status, "request_type": cmd.request_type,
                        "label": label(COMMAND_STATUS_LABELS, cmd.status)})


# What the protocol layer says about a command's parameters (English, for the API), said to people.
_COMMAND_REFUSALS = (
    (re.compile(r"PIN must be six digits"), "Mã PIN phải gồm đúng 6 chữ số.", "The PIN must be six digits."),
    (re.compile(r"Message or PhoneNumber is required"),
     "Vui lòng nhập nội dung thông báo hoặc số điện thoại hiển thị trên iPad.",
     "Enter the message or the phone number shown on the iPad."),
    (re.compile(r"(\w+) longer than (\d+) characters"), "Nội dung nhập quá dài (tối đa {1} ký tự).",
     "Too long ({1} characters at most)."),
)


def command_refusal(message: str) -> str:
    for pattern, vi, en in _COMMAND_REFUSALS:
        m = pattern.search(message)
        if m:
            return tr(vi.format(*m.groups()), en.format(*m.groups()))
    return tr("Lệnh không hợp lệ. Vui lòng kiểm tra các thông tin đã nhập.", "Invalid command: " + message)


def _command_params(request_type: str) -> dict | None:
    form = request.form
    if request_type == "DeviceLock":
        params = {k: form[k].strip() for k in ("Message", "PhoneNumber", "PIN") if form.get(k, "").strip()}
        return params
    if request_type == "EnableLostMode":
        return {k: form[k].strip() for k in ("Message", "PhoneNumber", "Footnote") if form.get(k, "").strip()}
    return None


@bp.post("/devices/<udid>/commands")
@requires("commands.send")
def send_command(udid):
    request_type = request.form.get("request_type", "")
    permission = CONSOLE_COMMANDS.get(request_type)
    if permission is None:
        abort(400)
    if not can(permission):
        abort(403)
    with unit_of_work() as s:
        device = _device_or_404(s, udid)
        if request_type in CONFIRM_COMMANDS and request.form.get("confirm") != "1":
            # Step one of two: show what will happen and ask for the serial number.
            return render_page("confirm_command.html", device=device, request_type=request_type,
                               label=COMMAND_LABELS[request_type], form=request.form)
        if request_type in CONFIRM_COMMANDS:
            typed = handover.normalise_serial(request.form.get("confirm_serial", ""))
            import hmac

            if not device.serial_number or not hmac.compare_digest(typed.encode(), device.serial_number.encode()):
                flash(tr("Số sê-ri nhập để xác nhận không khớp; lệnh chưa được gửi.",
                         "The serial number typed to confirm does not match; nothing was sent."), "error")
                return render_page("confirm_command.html", device=device, request_type=request_type,
                                   label=COMMAND_LABELS[request_type], form=request.form), 400
        try:
            if request_type == "EraseDevice":
                # Erasing is retiring: the workflow revokes the identity and removes the VPN peer once
                # the device acknowledges the wipe.
                record = handover.active_record_for_device(s, device.id)
                if record is not None and record.state in handover.TRANSITIONS["retire"][0]:
                    handover.retire(s, record, by=g.user.username, confirm_serial=request.form.get("confirm_serial", ""),
                                    note=request.form.get("note", ""))
                    cmd_uuid = record.erase_command_uuid
                else:
                    cmd_uuid = handover.retire_unrecorded(s, device, by=g.user.username).uuid
            else:
                cmd = mdm_service.send_command(s, udid, request_type, _command_params(request_type),
                                               requested_by=principal())
                cmd_uuid = cmd.uuid
            push_after_commit(s, device.id)
        except handover.TransitionRefused as exc:
            flash(exc.message(lang()), "error")
            return redirect(url_for("console.device_page", udid=udid))
        except (protocol.ProtocolError, ValueError) as exc:
            log.warning("command %s for %s refused: %s", request_type, udid, exc)
            flash(command_refusal(str(exc)), "error")
            return redirect(url_for("console.device_page", udid=udid))
    name = command_label(request_type)
    flash(tr(f"Đã xếp hàng lệnh “{name}” ({cmd_uuid}).", f"“{name}” queued ({cmd_uuid})."))
    if s.info.get("push_deferred"):
        flash(tr("Hàng đợi tác vụ tạm thời không truy cập được: thông báo đánh thức iPad sẽ được gửi khi hàng đợi "
                 "hoạt động trở lại; iPad cũng nhận lệnh ở lần kết nối kế tiếp.",
                 "The task queue is unavailable for now: the push that wakes the iPad goes out when the queue is "
                 "back; the iPad also gets the command at its next check-in."))
    return redirect(url_for("console.device_page", udid=udid))


# ------------------------------------------------------------------ units
PILOT_UNITS = (
    ("TCCB", "Vụ Tổ chức cán bộ", "Personnel and Organisation Department"),
    ("HC", "Vụ Hành chính", "Administration Department"),
    ("TTTH", "Trung tâm Tin học", "IT Center"),
)


def ensure_pilot_units(s) -> list[Unit]:
    """The three pilot units of the rollout (created once; existing codes are left as they are)."""
    out = []
    for code, vi, en in PILOT_UNITS:
        unit = s.scalar(select(Unit).where(Unit.code == code))
        if unit is None:
            unit = Unit(code=code, name_vi=vi, name_en=en, stage="pilot")
            s.add(unit)
        out.append(unit)
    s.flush()
    return out


@bp.route("/units", methods=["GET", "POST"])
@requires("units.read")
def units():
    error = None
    if request.method == "POST":
        if not can("units.write"):
            abort(403)
        action = request.form.get("action", "create")
        with unit_of_work() as s:
            if action == "pilot":
                ensure_pilot_units(s)
                flash(tr("Đã tạo các đơn vị thí điểm.", "Pilot units created."))
            elif action == "stage":
                unit = s.get(Unit, int_arg("unit_id", args=request.form) or 0)
                if unit is None:
                    abort(404)
                stage = request.form.get("stage")
                if stage not in ("pilot", "general"):
                    abort(400)
                unit.stage = stage
                flash(tr(f"Đã chuyển {unit.name_vi} sang giai đoạn mới.", f"{unit.name_en or unit.code}: stage changed."))
            else:
                code = request.form.get("code", "").strip().upper()
                name_vi = request.form.get("name_vi", "").strip()
                name_en = request.form.get("name_en", "").strip()
                stage = request.form.get("stage", "general")
                if not code or len(code) > 64 or not all(c.isalnum() or c in "-_" for c in code):
                    error = tr("Mã đơn vị: chữ, số, - và _, tối đa 64 ký tự.", "Unit code: letters, digits, - and _, at most 64.")
                elif not name_vi or len(name_vi) > 255 or len(name_en) > 255:
                    error = tr("Vui lòng nhập tên đơn vị (tối đa 255 ký tự).", "Enter the unit name (at most 255 characters).")
                elif stage not in ("pilot", "general"):
                    error = tr("Giai đoạn không hợp lệ.", "Invalid stage.")
                elif s.scalar(select(Unit.id).where(Unit.code == code)) is not None:
                    error = tr(f"Mã đơn vị {code} đã tồn tại.", f"Unit code {code} already exists.")
                else:
                    s.add(Unit(code=code, name_vi=name_vi, name_en=name_en, stage=stage))
                    flash(tr(f"Đã tạo đơn vị {name_vi}.", f"Unit {name_en or code} created."))
        if error is None:
            return redirect(url_for("console.units"))
    with unit_of_work() as s:
        rows = list(s.scalars(select(Unit).order_by((Unit.stage != "pilot"), Unit.name_vi)))
        counts = dict(s.execute(select(DeviceRecord.unit_id, func.count()).where(DeviceRecord.state != "retired")
                                .group_by(DeviceRecord.unit_id)).all())
        return render_page("units.html", units=rows, counts=counts, error=error), (400 if error else 200)


# ------------------------------------------------------------------ leaders
@bp.route("/leaders", methods=["GET", "POST"])
@requires("handover.read")
def leaders():
    from document_gateway import service as gw
    from document_gateway import LEADER_ROLES, Leader

    error = None
    if request.method == "POST":
        if not can("leaders.write"):
            abort(403)
        form = request.form
        with unit_of_work() as s:
            error = _leader_form_error(s, form)
            if error is None:
                gw.create_leader(s, form["full_name"].strip(), int_arg("unit_id", args=form), form["role"],
                                 title=form.get("title", "").strip(), created_by=principal())
        if error is None:
            flash(tr("Đã thêm lãnh đạo.", "Leader added."))
            return redirect(url_for("console.leaders"))
    with unit_of_work() as s:
        rows = list(s.scalars(select(Leader).order_by(Leader.active.desc(), Leader.full_name)))
        units = {u.id: u for u in s.scalars(select(Unit).order_by(Unit.name_vi))}
        return render_page("leaders.html", leaders=rows, units=units, roles=LEADER_ROLES, error=error,
                           form=request.form if error else {}), (400 if error else 200)


def _leader_form_error(s, form, leader=None) -> str | None:
    """Why this leader form cannot be saved, in the reader's language (None: it can). The same
    person twice (same name, same unit, still active) is refused unless confirmed."""
    from document_gateway import LEADER_ROLES, Leader

    name = (form.get("full_name") or "").strip()
    if not name or len(name) > 255:
        return tr("Vui lòng nhập họ tên (tối đa 255 ký tự).", "Please enter the full name (at most 255 characters).")
    if len(form.get("title") or "") > 255:
        return tr("Chức vụ dài tối đa 255 ký tự.", "The title has at most 255 characters.")
    if form.get("role") not in LEADER_ROLES:
        return tr("Vui lòng chọn cấp lãnh đạo trong danh sách.", "Please choose a rank from the list.")
    unit_id = int_arg("unit_id", args=form)
    if not unit_id or s.get(Unit, unit_id) is None:
        return tr("Vui lòng chọn đơn vị.", "Please choose a unit.")
    # Compared in Python: SQLite's lower() folds ASCII only ("Đ" stays "Đ").
    key = " ".join(name.casefold().split())
    same = next((other for other in s.scalars(select(Leader).where(Leader.unit_id == unit_id, Leader.active.is_(True)))
                 if " ".join(other.full_name.casefold().split()) == key and (leader is None or other.id != leader.id)),
                None)
    if same is not None and form.get("confirm_duplicate") != "1":
        return tr(f"Lãnh đạo “{same.full_name}” của đơn vị này đã có trong danh sách. Nếu đúng là hai người khác "
                  f"nhau, đánh dấu “Xác nhận trùng tên” rồi lưu lại.",
                  f"“{same.full_name}” of this unit is already listed. If these are two different people, tick "
                  f"“Confirm the same name” and save again.")
    return None


@bp.post("/leaders/<int:leader_id>")
@requires("leaders.write")
def leader_update(leader_id):
    """Edit a leader, or deactivate / reactivate (their iPads are refused documents at once)."""
    from document_gateway import service as gw
    from document_gateway import Leader

    form = request.form
    with unit_of_work() as s:
        leader = s.get(Leader, leader_id)
        if leader is None:
            abort(404)
        if "active" in form and len(form) <= 2:  # the deactivate / reactivate button (+ CSRF)
            gw.update_leader(s, leader, active=form["active"] == "1")
            log.warning("leader #%s %s by %s", leader_id, "reactivated" if leader.active else "deactivated",
                        principal())
            done = tr("Đã kích hoạt lại lãnh đạo.", "Leader reactivated.") if leader.active else \
                tr("Đã ngừng kích hoạt lãnh đạo; iPad của lãnh đạo này bị từ chối mở tài liệu ngay.",
                   "Leader deactivated; their iPads are refused documents at once.")
            error = None
        else:
            error = _leader_form_error(s, form, leader)
            if error is None:
                gw.update_leader(s, leader, full_name=form["full_name"].strip(), title=form.get("title", "").strip(),
                                 role=form["role"], unit_id=int_arg("unit_id", args=form))
                done = tr("Đã cập nhật thông tin lãnh đạo.", "Leader updated.")
    if error is not None:
        with unit_of_work() as s:
            from document_gateway import LEADER_ROLES

            rows = list(s.scalars(select(Leader).order_by(Leader.active.desc(), Leader.full_name)))
            units = {u.id: u for u in s.scalars(select(Unit).order_by(Unit.name_vi))}
            return render_page("leaders.html", leaders=rows, units=units, roles=LEADER_ROLES, error=error,
                               form={}, editing=leader_id), 400
    flash(done)
    return redirect(url_for("console.leaders"), 303)


# ------------------------------------------------------------------ a leader's own device
@bp.get("/me")
@requires("own_device.read")
def my_device():
    from compliance import current_verdict

    with unit_of_work() as s:
        items = []
        for device_id in sorted(_leader_device_ids(s, g.user)):
            device = s.get(Device, device_id)
            items.append({"device": device, "verdict": current_verdict(s, device.id),
                          "record": handover.active_record_for_device(s, device.id)})
        return render_page("me.html", items=items)
