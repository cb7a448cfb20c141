"""The dashboard's picture of the fleet: devices that need the IT center's action (each a filter
of the devices list) and compliance over the last days, from the verdict history."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import and_, exists, func, select

from compliance import DeviceVerdict, VerdictTransition
from mdm import Device, IdentityCertificate

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
GRACE_ENDING = dt.timedelta(hours=24)
CERT_EXPIRING = dt.timedelta(days=30)
NOT_SEEN = dt.timedelta(days=3)

# code -> (Vietnamese, English): what the IT center reads on the dashboard and the filtered list.
NEEDS = {
    "non_compliant": ("Không tuân thủ hoặc bị chặn", "Non-compliant or blocked"),
    "grace_ending": ("Thời hạn khắc phục kết thúc trong 24 giờ", "Remediation period ends within 24 hours"),
    "cert_expiring": ("Chứng thư số thiết bị hết hạn trong 30 ngày", "Identity certificate expires within 30 days"),
    "not_seen": ("Không liên lạc từ 3 ngày trở lên", "Not seen for 3 days or more"),
    "lost_mode": ("Đang ở chế độ mất", "In Lost Mode"),
}


def need_condition(code: str, now: dt.datetime):
    """The SQL condition of one need, over Device outer-joined with DeviceVerdict."""
    managed = Device.enrollment_state == "enrolled"
    if code == "non_compliant":
        return and_(managed, DeviceVerdict.state.in_(("non_compliant", "blocked")))
    if code == "grace_ending":
        return and_(managed, DeviceVerdict.state == "grace", DeviceVerdict.grace_deadline <= now + GRACE_ENDING)
    if code == "cert_expiring":
        return and_(managed, exists().where(IdentityCertificate.id == Device.current_identity_id,
                                            IdentityCertificate.revoked_at.is_(None),
                                            IdentityCertificate.not_after <= now + CERT_EXPIRING))
    if code == "not_seen":
        return and_(managed, Device.last_seen_at < now - NOT_SEEN)
    if code == "lost_mode":
        return and_(managed, Device.lost_mode_enabled.is_(True))
    raise KeyError(code)


def need_counts(session, now: dt.datetime) -> dict[str, int]:
    """One statement for every need (a count each, FILTER-style sums)."""
    from sqlalchemy import case

    columns = [func.coalesce(func.sum(case((need_condition(code, now), 1), else_=0)), 0).label(code) for code in NEEDS]
    row = session.execute(select(*columns).select_from(Device)
                          .outerjoin(DeviceVerdict, DeviceVerdict.device_id == Device.id)).one()
    return {code: int(getattr(row, code)) for code in NEEDS}


def compliance_series(session, now: dt.datetime, days: int = 14) -> list[dict]:
    """For each of the last `days` local days: how many devices were in each verdict state at the
    end of that day (today: now), replayed from the verdict history. Days before any verdict are
    absent (a gap, not a zero)."""
    today = now.astimezone(LOCAL).date()
    out = []
    for back in range(days - 1, -1, -1):
        day = today - dt.timedelta(days=back)
        end = min(now, dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), LOCAL).astimezone(dt.timezone.utc))
        latest = (select(VerdictTransition.device_id, VerdictTransition.to_state,
                         func.row_number().over(partition_by=VerdictTransition.device_id,
                                                order_by=(VerdictTransition.at.desc(), VerdictTransition.id.desc()))
                         .label("rn"))
                  .where(VerdictTransition.at < end).subquery())
        counts = dict(session.execute(select(latest.c.to_state, func.count()).where(latest.c.rn == 1)
                                      .group_by(latest.c.to_state)).all())
        total = sum(counts.values())
        if total:
            out.append({"day": day, "total": total, "compliant": counts.get("compliant", 0),
                        "grace": counts.get("grace", 0),
                        "failing": counts.get("non_compliant", 0) + counts.get("blocked", 0),
                        "other": total - counts.get("compliant", 0) - counts.get("grace", 0)
                        - counts.get("non_compliant", 0) - counts.get("blocked", 0)})
    return out


# Needs outside the devices list: each (Vietnamese, English, console endpoint, its arguments).
OTHER_NEEDS = {
    "app_profile_expiring": ("Ứng dụng nội bộ có hồ sơ cấp phép hết hạn trong 30 ngày",
                             "In-house apps whose provisioning profile expires within 30 days", "console.apps_page", {}),
    "usb_token_expiring": ("USB token có chứng thư số ký hết hạn trong 30 ngày",
                           "USB tokens whose signing certificate expires within 30 days", "console.usb_tokens",
                           {"expiring": "30"}),
    "usb_token_lost": ("USB token bị mất, chờ xác nhận thu hồi chứng thư số",
                       "Lost USB tokens awaiting the certificate's revocation", "console.usb_tokens", {"state": "lost"}),
}


def other_need_counts(session, now: dt.datetime) -> dict[str, int]:
    from apps import App, AppRelease
    from usb_tokens import UsbToken, service as tokens

    soon = now + CERT_EXPIRING
    apps = session.scalar(select(func.count(func.distinct(App.id))).join(AppRelease, AppRelease.app_id == App.id).where(
        AppRelease.state != "withdrawn", AppRelease.profile_expires_at.is_not(None), AppRelease.profile_expires_at <= soon))
    expiring = session.scalar(select(func.count()).select_from(UsbToken).where(tokens.expiring_condition(now, 30)))
    lost = session.scalar(select(func.count()).select_from(UsbToken).where(UsbToken.state == "lost"))
    return {"app_profile_expiring": apps or 0, "usb_token_expiring": expiring or 0, "usb_token_lost": lost or 0}
