"""Report periods and the office's local time.

Decision (documented in every report): months and days are cut at **local midnight in
Asia/Ho_Chi_Minh** (UTC+07:00; Viet Nam has no daylight saving time). Leaders and the
security staff think in local days — an event at 23:30 on 31 October local time belongs to
October even though it is 16:30 UTC. The local boundaries are converted to timezone-aware
UTC instants before any query, so the database (which stores UTC) is always compared
against UTC values. Every computation receives its period explicitly; nothing reads the
clock, so the same data always gives the same figures.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property

try:
    from zoneinfo import ZoneInfo

    LOCAL_TZ: dt.tzinfo = ZoneInfo("Asia/Ho_Chi_Minh")
except Exception:  # pragma: no cover - tzdata missing: the zone is a fixed +07:00 anyway
    LOCAL_TZ = dt.timezone(dt.timedelta(hours=7), "ICT")

UTC = dt.UTC
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, value: str) -> Month:
        m = _MONTH_RE.match(str(value).strip())
        if not m or not 1 <= int(m.group(2)) <= 12 or not 2000 <= int(m.group(1)) <= 2999:
            raise ValueError(f"month must look like 2026-10, got {value!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def containing(cls, instant: dt.datetime) -> Month:
        local = instant.astimezone(LOCAL_TZ)
        return cls(local.year, local.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    @property
    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    @cached_property
    def start(self) -> dt.datetime:
        """First instant of the month (local midnight on the 1st), as UTC."""
        return dt.datetime(self.year, self.month, 1, tzinfo=LOCAL_TZ).astimezone(UTC)

    @cached_property
    def end(self) -> dt.datetime:
        """First instant after the month (exclusive), as UTC."""
        return self.next.start

    @cached_property
    def days(self) -> list[dt.date]:
        first = dt.date(self.year, self.month, 1)
        n = (dt.date(self.next.year, self.next.month, 1) - first).days
        return [first + dt.timedelta(days=i) for i in range(n)]

    @cached_property
    def day_edges(self) -> list[dt.datetime]:
        """len(days) + 1 UTC instants: local midnights bounding each day of the month."""
        edges = [dt.datetime(d.year, d.month, d.day, tzinfo=LOCAL_TZ).astimezone(UTC) for d in self.days]
        return edges + [self.end]


@dataclass(frozen=True)
class ReportPeriod:
    """A month as far as it has happened: all of it once it is over, else up to `until`.

    A report over an unfinished month covers only the elapsed part (the last day partly) and
    is provisional; nothing is ever counted for days that have not happened. Computations take
    this object wherever they took a Month (same start / end / days / day_edges)."""

    month: Month
    until: dt.datetime

    @property
    def provisional(self) -> bool:
        return self.until < self.month.end

    @property
    def start(self) -> dt.datetime:
        return self.month.start

    @property
    def end(self) -> dt.datetime:
        return self.until

    @property
    def year(self) -> int:
        return self.month.year

    @property
    def previous(self) -> Month:
        return self.month.previous

    @cached_property
    def days(self) -> list[dt.date]:
        edges = self.month.day_edges
        return [d for d, edge in zip(self.month.days, edges) if edge < self.until]

    @cached_property
    def day_edges(self) -> list[dt.datetime]:
        return self.month.day_edges[: len(self.days)] + [self.until]

    def __str__(self) -> str:
        return str(self.month)


def period_of(month: Month, as_of: dt.datetime | None = None) -> ReportPeriod:
    """The part of `month` that has happened by `as_of` (None: the whole month, already over)."""
    if as_of is None or as_of >= month.end:
        return ReportPeriod(month, month.end)
    if as_of <= month.start:
        raise ValueError(f"month {month} has not begun yet")
    return ReportPeriod(month, as_of)


def months_of_year(year: int) -> list[Month]:
    return [Month(year, m) for m in range(1, 13)]


def parse_year(value) -> int:
    year = int(str(value).strip())
    if not 2000 <= year <= 2999:
        raise ValueError(f"year out of range: {value!r}")
    return year
