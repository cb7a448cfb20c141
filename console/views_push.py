"""The Apple push service in the console (issue #22, item 4): is Apple accepting our push certificate,
when does it expire, how many pushes wait, which topic the enrolled iPads use; IT administrators
install a renewed certificate here (a different topic needs an explicit confirmation). Everyone who
reads devices sees the state; only IT administrators change it."""
from __future__ import annotations

import datetime as dt

from flask import flash, g, redirect, request, url_for

from ipad_mdm.web import unit_of_work

from .web import bp, instance, lang, render_page, requires, tr

STATE_LABELS = {
    "ok": ("Hoạt động bình thường", "Working"),
    "off_demo": ("Đang tắt (chế độ thử nghiệm)", "Off (demo mode)"),
    "expiring": ("Sắp hết hạn: đề nghị gia hạn", "Expiring soon: renew it"),
    "expired": ("Đã hết hạn: iPad không nhận được lệnh", "Expired: iPads get no commands"),
    "certificate_rejected": ("Apple từ chối chứng thư số: iPad không nhận được lệnh",
                             "Apple refuses the certificate: iPads get no commands"),
    "topic_mismatch": ("Chủ đề của chứng thư số không khớp với iPad đã đăng ký",
                       "The certificate's topic does not match the enrolled iPads'"),
}
MAX_UPLOAD = 64 * 1024


def _when(value: str | None):
    return dt.datetime.fromisoformat(value) if value else None


@bp.get("/push")
@requires("devices.read")
def push_page(error: str | None = None, status_code: int = 200, confirm_needed: bool = False):
    from mdm import pushcert

    with unit_of_work() as s:
        state = pushcert.status(s, instance())
    cert = pushcert.current(instance())
    vi, en = STATE_LABELS.get(state["state"], (state["state"], state["state"]))
    return render_page("push.html", state=state, cert=cert, state_label=tr(vi, en), since=_when(state["since"]),
                       last_success=_when(state["last_success_at"]), last_failure=_when(state["last_failure_at"]),
                       error=error, confirm_needed=confirm_needed), status_code


@bp.post("/push/certificate")
@requires("push.manage")
def push_certificate_upload():
    from mdm import pushcert

    files = [request.files.get(name) for name in ("certificate", "private_key")]
    cert_pem, key_pem = (f.read(MAX_UPLOAD + 1) if f is not None and f.filename else b"" for f in files)
    if not cert_pem or not key_pem or len(cert_pem) > MAX_UPLOAD or len(key_pem) > MAX_UPLOAD:
        return push_page(tr("Vui lòng chọn tệp chứng thư số (.pem) và tệp khóa bí mật (.pem).",
                            "Choose the certificate (.pem) and private key (.pem) files."), 400)
    try:
        with unit_of_work() as s:
            out = pushcert.install_and_wake(s, instance(), cert_pem, key_pem,
                                            confirm=request.form.get("confirm_topic") == "1",
                                            by=f"console:{g.user.username}")
    except pushcert.TopicChangeRefused as exc:
        return push_page(exc.message(lang()), 409, confirm_needed=True)
    except pushcert.PushCertificateRefused as exc:
        return push_page(exc.message(lang()), 400)
    flash(tr(f"Đã cài chứng thư số APNs, hết hạn ngày {out['expires_on']}; {out['pushes_resumed']} iPad đang chờ "
             "được gửi lại thông báo.",
             f"Push certificate installed, expiring {out['expires_on']}; {out['pushes_resumed']} waiting iPad(s) are "
             "pushed again."))
    return redirect(url_for("console.push_page")), 303
