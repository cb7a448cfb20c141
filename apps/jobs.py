"""Periodic app work: warn before an in-house app's provisioning profile expires (30, 14 and 7
days ahead, and once expired): when it does, the app stops opening on every iPad at once."""
from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ipad_mdm import security_events
from ipad_mdm.db import utcnow
from ipad_mdm.jobs import background_task, periodic
from ipad_mdm.timefmt import days_until

from .models import App, AppRelease

log = logging.getLogger(__name__)
THRESHOLDS = (30, 14, 7, 0)


def warn_expiring_profiles(session, now: dt.datetime | None = None) -> list[str]:
    """One security event per release and threshold crossed (the tightest); returns their keys."""
    now = now or utcnow()
    warned = []
    rows = session.execute(select(AppRelease, App).join(App, App.id == AppRelease.app_id)
                           .where(AppRelease.state != "withdrawn", AppRelease.profile_expires_at.is_not(None)))
    for release, app in rows:
        days = days_until(release.profile_expires_at, now)
        crossed = [t for t in THRESHOLDS if days <= t]
        if not crossed:
            continue
        threshold = min(crossed)
        key = f"{app.bundle_id}:{release.version}:{threshold}"
        local = release.profile_expires_at.astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))
        when_vi, when_en = local.strftime("%d/%m/%Y"), local.strftime("%d %b %Y")
        if days > 0:
            vi = (f"Hồ sơ cấp phép (provisioning profile) của ứng dụng {app.name} phiên bản {release.version} hết hạn "
                  f"ngày {when_vi} (còn {days} ngày). Đề nghị ký lại ứng dụng và tải phiên bản mới lên trước ngày này; "
                  f"khi hồ sơ hết hạn, ứng dụng không mở được trên mọi iPad.")
            en = (f"The provisioning profile of {app.name} {release.version} expires on {when_en} ({days} days left). "
                  f"Re-sign the app and upload a new release before then; once it expires the app stops opening on "
                  f"every iPad.")
        else:
            vi = (f"Hồ sơ cấp phép của ứng dụng {app.name} phiên bản {release.version} đã hết hạn ngày {when_vi}: "
                  f"ứng dụng không mở được trên iPad. Đề nghị tải ngay phiên bản đã ký lại.")
            en = (f"The provisioning profile of {app.name} {release.version} expired on {when_en}: the app no longer "
                  f"opens on iPads. Upload a re-signed release now.")
        event = security_events.record(session, "app_profile_expiring", summary_vi=vi, summary_en=en, dedupe=True,
                                       details={"key": key, "bundle_id": app.bundle_id, "version": release.version,
                                                "days_left": days, "threshold": threshold})
        if event is not None:
            warned.append(key)
    return warned


@periodic("apps.warn_expiring_profiles", 6 * 3600)
def warn_job(rt) -> None:
    with rt.instance.database.session(dispatcher=rt.dispatcher) as s:
        warned = warn_expiring_profiles(s)
    if warned:
        log.warning("provisioning profiles expiring: %s", ", ".join(warned))


@background_task("apps.rollout")
def rollout_task(rt, requested_by: str) -> dict:
    """Reconcile every enrolled iPad with the releases it should have, in batches of 200."""
    from ipad_mdm.dispatch import push_after_commit
    from mdm import Device

    from . import delivery

    db = rt.instance.database
    with db.session() as s:
        ids = list(s.scalars(select(Device.id).where(Device.enrollment_state == "enrolled").order_by(Device.id)))
    queued = 0
    for start in range(0, len(ids), 200):
        with db.session(dispatcher=rt.dispatcher) as s:
            apps_ = list(s.scalars(select(App).order_by(App.id)))
            push = [d.id for d in s.scalars(select(Device).where(Device.id.in_(ids[start:start + 200])))
                    if delivery.reconcile_device(s, rt.instance, d, apps_, requested_by=requested_by)]
            push_after_commit(s, push)
            queued += len(push)
    return {"devices": len(ids), "queued": queued}
