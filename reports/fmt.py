"""How numbers, dates and periods read in the office's documents.

Vietnamese: 1.234,56 — 95,23 % — 02/12/2026 — "tháng 10 năm 2026" — local time (Asia/Ho_Chi_Minh).
English: 1,234.56 — 95.23% — 2 Dec 2026 — "October 2026". No data is "–", never 0.
"""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd

from .periods import LOCAL_TZ

NO_DATA = "–"
MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December")


def missing(v) -> bool:
    return v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def number(v, lang: str, decimals: int = 2) -> str:
    """1.234,56 (vi) / 1,234.56 (en); whole numbers without decimals."""
    if missing(v):
        return NO_DATA
    v = round(float(v), decimals)  # 9.999,99997 device-days reads as 10.000
    if v.is_integer() and decimals:
        decimals = 0
    text = f"{v:,.{decimals}f}"
    if lang == "vi":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def count(v, lang: str) -> str:
    return NO_DATA if missing(v) else number(int(round(float(v))), lang, 0)


def percent(rate, lang: str, decimals: int = 2) -> str:
    """A rate (0..1) as a percentage: 95,23 % (vi) / 95.23% (en)."""
    if missing(rate):
        return NO_DATA
    value = number(float(rate) * 100, lang, decimals)
    return f"{value} %" if lang == "vi" else f"{value}%"


def points(delta_pp, lang: str) -> str:
    """A change in percentage points, signed."""
    if missing(delta_pp):
        return NO_DATA
    sign = "+" if delta_pp > 0 else ""
    return f"{sign}{number(delta_pp, lang)} " + ("điểm phần trăm" if lang == "vi" else "percentage points")


def _local(value) -> dt.datetime:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert(LOCAL_TZ).to_pydatetime()


def date(value, lang: str) -> str:
    if missing(value):
        return NO_DATA
    d = value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else _local(value).date()
    return d.strftime("%d/%m/%Y") if lang == "vi" else f"{d.day} {MONTHS_EN[d.month - 1][:3]} {d.year}"


def datetime(value, lang: str) -> str:
    if missing(value):
        return NO_DATA
    local = _local(value)
    return f"{date(local.date(), lang)} {local.strftime('%H:%M')}"


def iso_date(text: str, lang: str) -> str:
    """'2026-10-05' (a table's day column) as a person reads it."""
    return date(dt.date.fromisoformat(text), lang)


def month_label(period: str, lang: str, *, short: bool = False) -> str:
    """'2026-10' → 'tháng 10 năm 2026' / '10/2026' (short) / 'October 2026' / 'Oct 2026'."""
    year, month = (int(x) for x in str(period).split("-"))
    if lang == "vi":
        return f"{month:02d}/{year}" if short else f"tháng {month} năm {year}"
    name = MONTHS_EN[month - 1]
    return f"{name[:3]} {year}" if short else f"{name} {year}"


def issue_date_line(place: str, day: dt.date, lang: str) -> str:
    """Decree 30/2020/NĐ-CP: 'Hà Nội, ngày 02 tháng 12 năm 2026' — days below 10 and the months
    January and February take a leading zero."""
    if lang == "vi":
        from ipad_mdm.decree30 import vn_date_line

        return vn_date_line(day, place)
    return f"{place}, {day.day} {MONTHS_EN[day.month - 1]} {day.year}"


def hours(v, lang: str) -> str:
    return NO_DATA if missing(v) else f"{number(v, lang, 1)} " + ("giờ" if lang == "vi" else "h")


def days(v, lang: str) -> str:
    return NO_DATA if missing(v) else f"{number(v, lang, 1)} " + ("ngày" if lang == "vi" else "days")
