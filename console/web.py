"""Console request plumbing: the blueprint, sign-in state, CSRF, permissions, language, headers.

Sessions are Flask's signed cookies (Secure when the base URL is https, HttpOnly, SameSite=Lax; set
by the app factory). A signed cookie cannot be revoked by itself, so each session carries the user's
`session_version`: logging out, a password change, a lockout or deactivation bumps it and every
outstanding cookie of that user stops working at its next request. Sessions also end after
IDLE_TIMEOUT without activity and ABSOLUTE_TIMEOUT after sign-in.
"""
from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time

from flask import (
    Blueprint,
    abort,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup

from ipad_mdm.crypto.pkcs11_keys import Pkcs11Error
from ipad_mdm.ipad_models import marketing_name, model_mismatch
from ipad_mdm.web import BadPaging, instance

from . import accounts
from .handover import ACTION_LABELS, STATE_LABELS
from .models import User

log = logging.getLogger("console.web")

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static", static_url_path="/static")

IDLE_TIMEOUT = 30 * 60
ABSOLUTE_TIMEOUT = 10 * 3600
PENDING_TOTP_TIMEOUT = 5 * 60
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
LANGS = ("vi", "en")

ROLE_LABELS = {
    "it_admin": ("Quản trị CNTT", "IT administrator"),
    "security_officer": ("Cán bộ phụ trách an toàn thông tin", "Security officer"),
    "auditor": ("Cán bộ kiểm tra, giám sát", "Auditor"),
    "leader": ("Lãnh đạo", "Leader"),
}
VERDICT_LABELS = {
    "compliant": ("Tuân thủ", "Compliant"),
    "grace": ("Trong thời hạn khắc phục", "Grace period"),
    "non_compliant": ("Không tuân thủ", "Non-compliant"),
    "blocked": ("Bị chặn", "Blocked"),
    "unknown": ("Chưa xác định", "Unknown"),
}
MDM_STATE_LABELS = {
    "authenticated": ("Đang đăng ký", "Authenticating"),
    "enrolled": ("Đang được quản lý", "Managed"),
    "checked_out": ("Đã gỡ quản lý", "Checked out"),
    "retired": ("Đã loại bỏ", "Retired"),
}
PUSH_LABELS = {
    "ok": ("Hoạt động bình thường", "Working"),
    "waiting": ("Đang chờ gửi", "Waiting to be sent"),
    "failing": ("Gửi không thành công, hệ thống tự thử lại", "Failing, retried automatically"),
    "no_token": ("Chưa có mã đánh thức (iPad chưa gửi TokenUpdate)", "No push token yet"),
    "certificate_refused": ("Tạm dừng: Apple từ chối chứng thư số APNs hoặc chứng thư số đã hết hạn; lệnh được gửi khi "
                            "cài chứng thư số gia hạn", "Held: Apple refuses the push certificate or it expired; sent once "
                            "a renewed certificate is installed"),
    "off_demo": ("Đang tắt (chế độ thử nghiệm, chưa có chứng thư số đánh thức của Apple): lệnh được gửi khi iPad tự kết nối",
                 "Off (demo mode, no Apple push certificate): commands go out when the iPad checks in by itself"),
}
COMMAND_STATUS_LABELS = {
    "queued": ("Đang chờ gửi", "Queued"), "sent": ("Đã gửi, chờ thiết bị trả lời", "Sent, awaiting the device"),
    "notnow": ("Thiết bị đang bận, sẽ thực hiện sau", "Device busy, will retry"),
    "acknowledged": ("Đã thực hiện", "Done"), "error": ("Thiết bị báo lỗi", "Device reported an error"),
    "command_format_error": ("Lệnh không hợp lệ với thiết bị", "Command not valid for the device"),
    "cancelled": ("Đã huỷ", "Cancelled"),
}
# Commands the server sends by itself (the console's own menu is console.views.COMMAND_LABELS).
OTHER_COMMAND_LABELS = {
    "InstallProfile": ("Cài đặt hồ sơ cấu hình", "Install profile"),
    "RemoveProfile": ("Gỡ hồ sơ cấu hình", "Remove profile"),
    "InstallApplication": ("Cài đặt ứng dụng", "Install app"),
    "RemoveApplication": ("Gỡ ứng dụng", "Remove app"),
    "ManagedApplicationList": ("Cập nhật danh sách ứng dụng được quản lý", "Refresh managed apps"),
    "Settings": ("Áp dụng thiết lập", "Apply settings"),
    "DeclarativeManagement": ("Đồng bộ khai báo cấu hình", "Declarative management sync"),
    "ScheduleOSUpdate": ("Cập nhật iPadOS", "Update iPadOS"),
    "AvailableOSUpdates": ("Kiểm tra bản cập nhật iPadOS", "Check iPadOS updates"),
    "OSUpdateStatus": ("Kiểm tra tiến độ cập nhật iPadOS", "iPadOS update progress"),
    "ClearPasscode": ("Xoá mật mã mở khoá", "Clear passcode"),
    "ProvisioningProfileList": ("Cập nhật danh sách hồ sơ cấp phép", "Refresh provisioning profiles"),
}
CLASSIFICATION_LABELS = {
    "public": ("Công khai", "Public"), "internal": ("Nội bộ", "Internal"),
    "confidential": ("Hạn chế tiếp cận", "Restricted"),
    "secret": ("Thuộc bí mật nhà nước", "State secret"),
}
SIGNATURE_LABELS = {"valid": ("Chữ ký số hợp lệ", "Valid digital signature"),
                    "invalid": ("Chữ ký số không hợp lệ", "Invalid digital signature"),
                    "unsigned": ("Không có chữ ký số", "Not signed")}
LEADER_RANK_LABELS = {
    "minister": ("Bộ trưởng, Chủ nhiệm", "Minister"), "vice_minister": ("Phó Chủ nhiệm", "Vice minister"),
    "director": ("Vụ trưởng và tương đương", "Director general"),
    "deputy_director": ("Phó Vụ trưởng và tương đương", "Deputy director general"),
}
VPN_STATE_LABELS = {"active": ("Đang hoạt động", "Active"), "cut": ("Đã cắt kết nối", "Cut"),
                    "removed": ("Đã gỡ bỏ", "Removed")}
VPN_KIND_LABELS = {"wireguard": ("WireGuard", "WireGuard"), "ikev2": ("IKEv2 (chứng thư số)", "IKEv2 (certificate)")}
REVOCATION_REASON_LABELS = {
    "unspecified": ("Không nêu lý do", "Unspecified"), "keyCompromise": ("Lộ khóa bí mật", "Key compromise"),
    "affiliationChanged": ("Thay đổi đơn vị quản lý", "Affiliation changed"),
    "superseded": ("Đã được cấp chứng thư mới thay thế", "Superseded by a new certificate"),
    "cessationOfOperation": ("Thiết bị ngừng sử dụng (đã loại bỏ)", "The device is out of service (retired)"),
    "certificateHold": ("Tạm dừng hiệu lực", "On hold"),
    "privilegeWithdrawn": ("Bị rút quyền (phát hiện chiếm quyền định danh)", "Privilege withdrawn (takeover attempt)"),
}
AUDIT_ACTION_LABELS = {"list": ("Xem danh sách tài liệu", "List documents"), "view": ("Mở tài liệu", "Open a document"),
                       "edge": ("Truy cập hệ thống văn bản (qua cổng kiểm soát)", "Document system access (through the proxy)")}
DECISION_LABELS = {"allow": ("Cho phép", "Allowed"), "deny": ("Từ chối", "Denied")}
STAGE_LABELS = {"pilot": ("Thí điểm", "Pilot"), "general": ("Triển khai chung", "General rollout")}


# ------------------------------------------------------------------ language
def lang() -> str:
    value = session.get("lang")
    return value if value in LANGS else "vi"  # Vietnamese by default


def tr(vi: str, en: str) -> str:
    return vi if lang() == "vi" else en


def label(table: dict, key) -> str:
    pair = table.get(key)
    if pair is None:
        return "" if key is None else str(key)
    return pair[0] if lang() == "vi" else pair[1]


# ------------------------------------------------------------------ CSRF
def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_field() -> Markup:
    return Markup('<input type="hidden" name="csrf_token" value="%s">') % csrf_token()


@bp.before_request
def _check_csrf():
    if request.method not in UNSAFE_METHODS:
        return None
    expected = session.get("csrf")
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    # Constant-time comparison: the token must not leak byte by byte through timing.
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        log.warning("CSRF check failed on %s %s", request.method, request.path)
        return render_page("error.html", status=400, code=400,
                           message=tr("Phiên làm việc đã hết hạn hoặc yêu cầu không hợp lệ (CSRF). Vui lòng tải lại trang và thử lại.",
                                      "Your session expired or the request is not valid (CSRF). Reload the page and try again.")), 400
    return None


# ------------------------------------------------------------------ who is signed in
@bp.before_request
def _load_user():
    g.user = None
    uid = session.get("uid")
    if uid is None:
        return
    now = time.time()
    if now - session.get("seen", 0) > IDLE_TIMEOUT or now - session.get("auth_at", 0) > ABSOLUTE_TIMEOUT:
        _end_session()
        return
    with instance().database.session() as s:
        user = s.get(User, uid)
        if user is None or not user.active or user.session_version != session.get("sv") or accounts.is_locked(user):
            _end_session()
            return
        s.expunge(user)
    g.user = user
    session["seen"] = now
    return


def _end_session() -> None:
    keep_lang = session.get("lang")
    session.clear()
    if keep_lang:
        session["lang"] = keep_lang


def start_session(user: User) -> None:
    """After full authentication: a fresh session (no fixation) with a fresh CSRF token."""
    keep_lang = session.get("lang")
    session.clear()
    session.update(uid=user.id, sv=user.session_version, auth_at=time.time(), seen=time.time(),
                   csrf=secrets.token_urlsafe(32))
    if keep_lang:
        session["lang"] = keep_lang


def principal() -> str:
    return f"user:{g.user.username}" if g.get("user") else "anonymous"


def can(permission: str) -> bool:
    user = g.get("user")
    return user is not None and accounts.allowed(user.role, permission)


def requires(permission: str | None = None):
    """Signed in, and (if given) a role that grants `permission`; else login redirect or 403."""

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            if g.get("user") is None:
                if request.method == "GET" and not request.path.endswith(".json"):
                    return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
                abort(401)
            if permission is not None and not can(permission):
                log.warning("%s (%s) refused %s on %s", g.user.username, g.user.role, permission, request.path)
                g.refused_permission = permission
                abort(403)
            return view(*args, **kwargs)

        return inner

    return wrap


# ------------------------------------------------------------------ rendering
def render_page(template: str, status: int = 200, **ctx):
    return render_template(f"console/{template}", **ctx)


@bp.app_template_filter("dt")
def _format_dt(value) -> str:
    if value is None or value == "":
        return ""
    import datetime as dt
    from zoneinfo import ZoneInfo

    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    # Staff read local time (Hà Nội), the database keeps UTC.
    return value.astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%d/%m/%Y %H:%M")


@bp.app_template_filter("num")
def _format_number(value) -> str:
    """A whole number for people: 1.234 (vi), 1,234 (en)."""
    text = f"{int(value):,}"
    return text.replace(",", ".") if lang() == "vi" else text


@bp.app_template_filter("d")
def _format_date(value) -> str:
    """A date for people: dd/mm/yyyy in local time."""
    text = _format_dt(value)
    return text[:10]


@bp.context_processor
def _context():
    return {
        "tr": tr, "lang": lang(), "current_user": g.get("user"), "csrf_field": csrf_field, "csrf_token": csrf_token,
        "can": can, "state_label": lambda s: label(STATE_LABELS, s), "action_label": lambda a: label(ACTION_LABELS, a),
        "role_label": lambda r: label(ROLE_LABELS, r), "verdict_label": lambda v: label(VERDICT_LABELS, v),
        "mdm_label": lambda v: label(MDM_STATE_LABELS, v), "stage_label": lambda v: label(STAGE_LABELS, v),
        "push_label": lambda v: label(PUSH_LABELS, v),
        "vpn_state_label": lambda v: label(VPN_STATE_LABELS, v), "vpn_kind_label": lambda v: label(VPN_KIND_LABELS, v),
        "rank_label": lambda v: label(LEADER_RANK_LABELS, v),
        "classification_label": lambda v: label(CLASSIFICATION_LABELS, v),
        "signature_label": lambda v: label(SIGNATURE_LABELS, v), "model_label": _model_label,
        "command_status_label": lambda v: label(COMMAND_STATUS_LABELS, v), "command_label": command_label, "model_mismatch": model_mismatch,
        "revocation_label": lambda v: label(REVOCATION_REASON_LABELS, v), "vpn_reason_label": vpn_reason_label,
        "audit_action_label": lambda v: label(AUDIT_ACTION_LABELS, v), "decision_label": lambda v: label(DECISION_LABELS, v),
        "gateway_reason_label": gateway_reason_label,
    }


def vpn_reason_label(reason: str | None) -> str:
    """Why a VPN peer was cut or removed: the compliance verdict in words; an operator's own words as typed."""
    if not reason:
        return ""
    if reason.startswith("compliance verdict "):
        state = reason.rsplit(" ", 1)[1]
        return tr("Không đáp ứng chính sách tuân thủ: ", "Compliance verdict: ") + label(VERDICT_LABELS, state)
    if reason in REVOCATION_REASON_LABELS:
        return label(REVOCATION_REASON_LABELS, reason)
    return reason


def gateway_reason_label(code: str | None) -> str:
    from document_gateway import i18n

    return i18n.audit_label(code, lang())


def command_label(request_type: str | None) -> str:
    from .views import COMMAND_LABELS

    return label(COMMAND_LABELS if request_type in COMMAND_LABELS else OTHER_COMMAND_LABELS, request_type)


def _model_label(product: str | None, fallback: str | None = None) -> str:
    """The iPad's name as people know it ("iPad (thế hệ thứ 10)"), else what is known of it."""
    return marketing_name(product, lang()) or fallback or product or ""


def _error_page(code: int, vi: str, en: str):
    return render_page("error.html", code=code, message=tr(vi, en)), code


@bp.errorhandler(401)
def _unauthorized(_exc):
    return _error_page(401, "Vui lòng đăng nhập.", "You need to sign in.")


@bp.errorhandler(403)
def _forbidden(_exc):
    permission = g.get("refused_permission")
    roles = [r for r in ROLE_LABELS if permission and accounts.allowed(r, permission)]
    if not roles:
        return _error_page(403, "Tài khoản không có quyền thực hiện thao tác này.", "This account may not do this.")
    you_vi, you_en = ROLE_LABELS.get(g.user.role, (g.user.role, g.user.role)) if g.get("user") else ("", "")
    return _error_page(
        403,
        f"Tài khoản với vai trò “{you_vi}” không có quyền thực hiện thao tác này. Chức năng này dành cho: "
        f"{', '.join(ROLE_LABELS[r][0] for r in roles)}. Đề nghị liên hệ người có vai trò đó hoặc quản trị hệ thống.",
        f"An account with the role “{you_en}” may not do this. It is for: "
        f"{', '.join(ROLE_LABELS[r][1] for r in roles)}. Please ask someone with that role or the administrator.")


@bp.errorhandler(BadPaging)
def _bad_paging(exc):
    log.warning("%s %s -> 400: %s", request.method, request.path, exc)
    return _error_page(400, "Số trang hoặc tham số lọc không hợp lệ.", "The page number or filter is not valid.")


@bp.errorhandler(Pkcs11Error)
def _token_unavailable(exc: Pkcs11Error):
    # The CA or profile-signing token is away or refuses its PIN: the action was not done (its
    # transaction rolled back); say which token, in the reader's language.
    log.error("%s %s -> 503: %s", request.method, request.path, exc)
    page, code = _error_page(503, exc.message("vi"), exc.message("en"))
    return page, code, {"Retry-After": "60"}


@bp.errorhandler(404)
def _not_found(_exc):
    return _error_page(404, "Không tìm thấy.", "Not found.")


@bp.after_request
def _headers(resp):
    # No external assets, no framing, no inline scripts: the console works on a closed network and a
    # stored XSS could not load anything or run inline code.
    resp.headers.setdefault("Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                            "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if "Cache-Control" not in resp.headers:
        resp.headers["Cache-Control"] = "no-store"
    if request.is_secure:
        resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return resp
