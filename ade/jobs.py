"""Sync every 30 minutes (Apple asks servers not to poll more often); token expiry warnings daily."""
from __future__ import annotations

import logging

from ipad_mdm.jobs import periodic
from ipad_mdm.timefmt import local_date

log = logging.getLogger("ade")


@periodic("ade.sync", 1800)
def sync_all(rt) -> dict:
    from sqlalchemy import select

    from .models import AdeToken
    from .service import AdeError, sync

    out = {}
    with rt.instance.database.session() as s:
        ids = list(s.scalars(select(AdeToken.id)))
    for token_id in ids:
        try:
            with rt.instance.database.session() as s:
                out[token_id] = sync(s, rt.instance, rt.hooks, s.get(AdeToken, token_id))
        except AdeError as exc:
            with rt.instance.database.session() as s:
                s.get(AdeToken, token_id).last_error = str(exc)[:300]
            out[token_id] = {"error": exc.code}
    return out


@periodic("ade.token_expiry", 24 * 3600)
def token_expiry(rt) -> dict:
    from ipad_mdm import security_events

    from .service import expiry_warnings

    warned = []
    with rt.instance.database.session() as s:
        for row, days in expiry_warnings(s):
            day = local_date(row.access_token_expiry)
            security_events.record(
                s, "ade_token_expiring", details={"key": f"ade-{row.id}-{row.warned_days}", "days_left": days},
                summary_vi=f"Mã thông báo máy chủ “{row.server_name}” của Apple Business Manager hết hạn ngày {day} "
                           f"(còn {max(days, 0)} ngày). Đề nghị tải mã mới từ Apple Business Manager và cập nhật "
                           "lên hệ thống trước ngày hết hạn.",
                summary_en=f"The Apple Business Manager server token “{row.server_name}” expires on {day} "
                           f"({max(days, 0)} days left). Download a new one from Apple Business Manager and upload it.",
                dedupe=True)
            warned.append({"token": row.id, "days_left": days})
    return {"warned": warned}
