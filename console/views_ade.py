"""Automated Device Enrollment in the console (issue #21): the server's public key for Apple
Business Manager, the server tokens with their expiry (warned 30/14/7 days ahead), the iPads ABM
assigned here, sync and the enrollment profile. IT staff change; security officers and auditors read."""
from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from flask import Response, flash, g, redirect, request, url_for
from sqlalchemy import select

from ipad_mdm.web import hooks, unit_of_work

from .web import bp, instance, render_page, requires, tr

# What a refusal says, in words (the API's codes never reach the page).
REFUSALS = {
    "token_unreadable": ("Tệp không phải mã thông báo máy chủ (.p7m) của Apple Business Manager.",
                         "The file is not an Apple Business Manager server token (.p7m)."),
    "token_not_for_this_server": ("Mã thông báo không được mã hoá cho khoá của máy chủ này. Vui lòng kiểm tra đã tải "
                                  "đúng chứng thư khoá công khai của máy chủ này lên Apple Business Manager.",
                                  "The token is not encrypted to this server's key. Check that this server's public "
                                  "key certificate was uploaded in Apple Business Manager."),
    "token_expired": ("Mã thông báo đã hết hạn. Vui lòng tải mã mới từ Apple Business Manager.",
                      "The token has expired. Download a new one from Apple Business Manager."),
    "token_conflict": ("Mã thông báo thuộc một máy chủ MDM khác trong Apple Business Manager.",
                       "The token belongs to another MDM server in Apple Business Manager."),
    "apple_refused": ("Apple từ chối yêu cầu. Nếu tổ chức chưa chấp nhận điều khoản mới, vui lòng đăng nhập Apple "
                      "Business Manager để chấp nhận, rồi thử lại.",
                      "Apple refused the request. If the organisation has not accepted Apple's new terms, sign in "
                      "to Apple Business Manager to accept them, then retry."),
    "invalid_profile": ("Vui lòng nhập đủ đơn vị, số điện thoại và thư điện tử hỗ trợ.",
                        "Enter the department, support phone and support e-mail."),
}
PROFILE_STATUS = {"empty": ("Chưa gán hồ sơ", "No profile"), "assigned": ("Đã gán hồ sơ", "Profile assigned"),
                  "pushed": ("iPad đã nhận hồ sơ", "Profile pushed"), "removed": ("Đã gỡ hồ sơ", "Profile removed")}


def _refusal(code: str) -> str:
    vi, en = REFUSALS.get(code, ("Không thực hiện được thao tác.", "The action could not be done."))
    return tr(vi, en)


@bp.get("/ade")
@requires("ade.read")
def ade_page(error: str | None = None, status: int = 200):
    import ade

    with unit_of_work() as s:
        tokens = ade.service.tokens_with_counts(s)
        devices = [{"serial": d.serial_number, "model": d.model or d.description,
                    "status": tr(*PROFILE_STATUS.get(d.profile_status, (d.profile_status, d.profile_status))),
                    "removed": d.removed_at is not None}
                   for d in s.scalars(select(ade.AdeDevice).order_by(ade.AdeDevice.serial_number).limit(500))]
    return render_page("ade.html", tokens=tokens, devices=devices, error=error), status


@bp.get("/ade/public-key")
@requires("ade.write")
def ade_public_key():
    import ade

    cert, _ = ade.keypair(instance().settings.instance_dir)
    return Response(cert.public_bytes(serialization.Encoding.PEM), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="ipad-mdm-ade.pem"'})


@bp.post("/ade/tokens")
@requires("ade.write")
def ade_token_upload():
    import ade

    upload = request.files.get("token")
    data = upload.read(64 * 1024 + 1) if upload is not None and upload.filename else b""
    try:
        with unit_of_work() as s:
            row = ade.service.add_token(s, instance(), data, by=f"console:{g.user.username}")
            name = row.server_name
    except ade.service.AdeError as exc:
        return ade_page(_refusal(exc.code), 400 if exc.status < 500 else 502)
    flash(tr(f"Đã cập nhật mã thông báo của máy chủ “{name}”.", f"Server token of “{name}” stored."))
    return redirect(url_for("console.ade_page")), 303


@bp.post("/ade/tokens/<int:token_id>/<action>")
@requires("ade.write")
def ade_token_action(token_id: int, action: str):
    import ade

    if action not in ("sync", "profile"):
        return ade_page(_refusal(""), 404)
    try:
        with unit_of_work() as s:
            row = s.get(ade.AdeToken, token_id)
            if row is None:
                return ade_page(_refusal(""), 404)
            if action == "sync":
                out = ade.service.sync(s, instance(), hooks(), row)
                message = tr(f"Đã đồng bộ: {out['fetched']} iPad, {out['added']} iPad mới.",
                             f"Synced: {out['fetched']} iPads, {out['added']} new.")
            else:
                f = request.form
                ade.service.define_profile(s, instance(), row, department=f.get("department", "").strip(),
                                           support_phone=f.get("support_phone", "").strip(),
                                           support_email=f.get("support_email", "").strip(),
                                           by=f"console:{g.user.username}")
                message = tr("Đã tạo hồ sơ đăng ký tại Apple và gán cho các iPad.",
                             "The enrollment profile is defined at Apple and assigned to the iPads.")
    except ade.service.AdeError as exc:
        return ade_page(_refusal(exc.code), 400 if exc.status < 500 else 502)
    flash(message)
    return redirect(url_for("console.ade_page")), 303
