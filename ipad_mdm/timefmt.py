"""Time values as the API and the stored JSON show them (ISO 8601, UTC offset kept), as the office reads
them (dd/mm/yyyy, local time), and the expiry-warning thresholds they cross."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def local_date(value: dt.datetime) -> str:
    """dd/mm/yyyy in Vietnam's time (the date a warning or a page gives)."""
    return value.astimezone(LOCAL).strftime("%d/%m/%Y")


def warning_threshold(days_left: int, thresholds, warned: int | None) -> int | None:
    """The lowest of `thresholds` (days before an expiry) that `days_left` has reached and that no earlier
    warning (`warned`, the threshold last warned at) covered; None when no new warning is due."""
    crossed = [t for t in thresholds if days_left <= t and (warned is None or t < warned)]
    return min(crossed) if crossed else None


def days_until(when: dt.datetime, now: dt.datetime) -> int:
    """Whole days left before `when`, a part day counting as one; 0 once it has passed (expiry warnings)."""
    left = when - now
    return left.days + (1 if left.seconds or left.microseconds else 0) if left > dt.timedelta(0) else 0
