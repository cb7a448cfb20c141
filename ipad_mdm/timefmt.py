"""Time values as the API and the stored JSON show them (ISO 8601, UTC offset kept)."""
from __future__ import annotations

import datetime as dt


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
