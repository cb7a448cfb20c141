"""Time values as the API and the stored JSON show them (ISO 8601, UTC offset kept)."""
from __future__ import annotations

import datetime as dt


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def days_until(when: dt.datetime, now: dt.datetime) -> int:
    """Whole days left before `when`, a part day counting as one; 0 once it has passed (expiry warnings)."""
    left = when - now
    return left.days + (1 if left.seconds or left.microseconds else 0) if left > dt.timedelta(0) else 0
