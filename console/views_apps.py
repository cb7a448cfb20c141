"""The office's apps in the console: the catalog, each app's releases (upload, acceptance with the
signed minute, pause, resume, roll back) and where every unit and iPad stands."""
from __future__ import annotations

from flask import abort, flash, redirect, request, url_for

from ipad_mdm.web import instance, unit_of_work

from .web import bp, can, label, lang, principal, render_page, requires, tr

RELEASE_LABELS = {"pilot": ("Thí điểm", "Pilot"), "accepted": ("Đã nghiệm thu", "Accepted"),
                  "withdrawn": ("Đã rút lại", "Withdrawn")}
STATUS_LABELS = {"pending": ("Chờ cài đặt", "Pending"), "installing": ("Đang cài đặt", "Installing"),
                 "installed": ("Đã cài đặt", "Installed"), "failed": ("Cài đặt lỗi", "Failed")}
MAX_MINUTE = 20 * 1024 * 1024


def _rollout(s) -> str:
    from apps import delivery

    n = delivery.rollout(s, instance(), requested_by=principal())["devices_queued"]
    if n is None:
        return tr("Các thiết bị sẽ nhận lệnh cài đặt trong ít phút.", "The iPads are being queued.")
    return tr(f"{n} thiết bị nhận lệnh cài đặt.", f"{n} iPad(s) queued.")


@bp.get("/apps")
@requires("devices.read")
def apps_page():
    from sqlalchemy import select

    from apps import App, delivery, service

    with unit_of_work() as s:
        rows = []
        for a in s.scalars(select(App).order_by(App.bundle_id)):
            p = delivery.progress(s, a)
            totals = {k: sum(u[k] for u in p["units"].values()) for k in STATUS_LABELS}
            rows.append((a, service.accepted_version(a), a.releases[-1] if a.releases else None, totals))
        return render_page("apps.html", rows=rows, release_label=lambda v: label(RELEASE_LABELS, v),
                           status_label=lambda v: label(STATUS_LABELS, v), statuses=STATUS_LABELS)


@bp.route("/apps/<bundle_id>", methods=["GET", "POST"])
@requires("devices.read")
def app_page(bundle_id):
    from apps import delivery, service
    from ipad_mdm.files import TooLarge, spool

    error = None
    if request.method == "POST":
        action = request.form.get("action")
        need = "apps.accept" if action == "accept" else "apps.write"
        if not can(need):
            abort(403)
        try:
            with unit_of_work() as s:
                app = service.get_app(s, bundle_id)
                if action == "upload":
                    f = request.files.get("ipa")
                    if f is None or not f.filename:
                        raise service.AppError(tr("Vui lòng chọn tệp .ipa.", "Choose an .ipa file."))
                    tmp, _d, _n = spool(f.stream, service.app_dir(instance()) / "incoming", service.max_upload_bytes())
                    release = service.add_inhouse_release(s, instance(), app, tmp, created_by=principal())
                    msg = tr(f"Đã tải lên phiên bản {release.version}; triển khai thí điểm.",
                             f"Release {release.version} uploaded; pilot first.")
                elif action == "accept":
                    release = service.get_release(app, request.form.get("version", ""))
                    minute = request.files.get("minute")
                    data = minute.read(MAX_MINUTE + 1) if minute is not None else b""
                    if not data or len(data) > MAX_MINUTE:
                        raise service.AppError(tr("Vui lòng đính kèm biên bản nghiệm thu (tối đa 20 MB).",
                                                  "Attach the acceptance minute (up to 20 MB)."))
                    service.accept(s, instance(), release, by=principal(), minute=data, filename=minute.filename,
                                   notes=request.form.get("notes") or None)
                    msg = tr(f"Đã ghi nhận nghiệm thu phiên bản {release.version}; triển khai cho mọi đơn vị.",
                             f"Acceptance of {release.version} recorded; rolling out to every unit.")
                elif action in ("pause", "resume", "withdraw"):
                    release = service.get_release(app, request.form.get("version", ""))
                    if action == "withdraw":
                        service.withdraw(release)
                    else:
                        service.set_paused(release, action == "pause")
                    msg = tr("Đã cập nhật trạng thái triển khai.", "Rollout updated.")
                else:
                    abort(400)
                note = _rollout(s)
            flash(msg + " " + note)
            return redirect(url_for("console.app_page", bundle_id=bundle_id))
        except service.AppError as exc:
            if lang() == "en" or exc.message.startswith("Vui lòng"):
                error = exc.message
            else:
                error = f"Không thực hiện được: {_REFUSALS.get(exc.code, 'yêu cầu không hợp lệ')}."
        except TooLarge:
            error = tr("Tệp lớn hơn giới hạn cho phép.", "The file is larger than allowed.")
    with unit_of_work() as s:
        try:
            app = service.get_app(s, bundle_id)
        except service.AppError:
            abort(404)
        progress = delivery.progress(s, app)
        return render_page("app.html", app=app, progress=progress, error=error,
                           release_label=lambda v: label(RELEASE_LABELS, v),
                           status_label=lambda v: label(STATUS_LABELS, v)), (400 if error else 200)


_REFUSALS = {
    "not_zip": "tệp không phải là gói ứng dụng .ipa", "no_app": "gói không chứa ứng dụng",
    "no_info_plist": "ứng dụng thiếu tệp Info.plist", "bad_info_plist": "Info.plist không hợp lệ",
    "bad_profile": "hồ sơ cấp phép đã bị thay đổi hoặc không hợp lệ", "bundle_mismatch": "tệp là của ứng dụng khác",
    "not_newer": "phiên bản không mới hơn phiên bản đã có", "version_exists": "phiên bản này đã được tải lên",
    "not_pilot": "phiên bản không còn ở giai đoạn thí điểm", "withdrawn": "phiên bản đã bị rút lại",
    "unknown_release": "không có phiên bản này", "too_large": "tệp quá lớn",
}
