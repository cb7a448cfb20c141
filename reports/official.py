"""The report as an administrative document of the office (Decree 30/2020/NĐ-CP): who issues
it, its number from the yearly register, place and date, signer and recipients.

Issuer settings (environment; defaults in brackets):
  IPAD_MDM_REPORT_ISSUER_PARENT   [VĂN PHÒNG CHÍNH PHỦ]   the governing body, above the issuer
  IPAD_MDM_REPORT_ISSUER          [TRUNG TÂM TIN HỌC]     the issuing unit
  IPAD_MDM_REPORT_ISSUER_ABBR     [TTTH]                  in "Số: …/BC-TTTH" and "Lưu: VT, TTTH"
  IPAD_MDM_REPORT_PLACE           [Hà Nội]
  IPAD_MDM_REPORT_SIGNER_TITLE    [GIÁM ĐỐC]
  IPAD_MDM_REPORT_SIGNER_NAME     [empty: left for the signer to write]
  IPAD_MDM_REPORT_RECIPIENTS      ["Lãnh đạo Văn phòng Chính phủ (để báo cáo);Các vụ, đơn vị thuộc Văn phòng (để biết)"]
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow

from .models import RegisterEntry
from .periods import LOCAL_TZ

_EN = {"VĂN PHÒNG CHÍNH PHỦ": "GOVERNMENT OFFICE", "TRUNG TÂM TIN HỌC": "IT CENTER", "Hà Nội": "Ha Noi",
       "GIÁM ĐỐC": "DIRECTOR"}


@dataclass(frozen=True)
class Issuer:
    parent: str = "VĂN PHÒNG CHÍNH PHỦ"
    unit: str = "TRUNG TÂM TIN HỌC"
    abbr: str = "TTTH"
    place: str = "Hà Nội"
    signer_title: str = "GIÁM ĐỐC"
    signer_name: str = ""
    recipients: tuple[str, ...] = ("Lãnh đạo Văn phòng Chính phủ (để báo cáo)", "Các vụ, đơn vị thuộc Văn phòng (để biết)")

    @classmethod
    def from_env(cls, env=None) -> Issuer:
        env = os.environ if env is None else env
        d = cls()

        def get(name, default):
            value = env.get(f"IPAD_MDM_REPORT_{name}", "").strip()
            return value or default

        recipients = env.get("IPAD_MDM_REPORT_RECIPIENTS", "").strip()
        return cls(parent=get("ISSUER_PARENT", d.parent), unit=get("ISSUER", d.unit), abbr=get("ISSUER_ABBR", d.abbr),
                   place=get("PLACE", d.place), signer_title=get("SIGNER_TITLE", d.signer_title),
                   signer_name=get("SIGNER_NAME", d.signer_name),
                   recipients=tuple(r.strip() for r in recipients.split(";") if r.strip()) or d.recipients)

    def shown(self, field: str, lang: str) -> str:
        value = getattr(self, field)
        return _EN.get(value, value) if lang == "en" else value

    def number_line(self, number: int | None, lang: str) -> str:
        """'Số: 12/BC-TTTH'; without a number (a draft or provisional report) the number is left
        blank for the records office, as on a paper draft."""
        n = str(number) if number else "\u2003\u2003"
        return f"{'Số' if lang == 'vi' else 'No.'}: {n}/BC-{self.abbr}"

    def recipient_lines(self, lang: str) -> list[str]:
        lines = [f"- {r};" for r in self.recipients]
        lines.append(f"- {'Lưu' if lang == 'vi' else 'Filed'}: VT, {self.abbr}.")
        return lines


def local_date(instant: dt.datetime) -> dt.date:
    return instant.astimezone(LOCAL_TZ).date()


def register_number(session: Session, kind: str, period: str, now: dt.datetime | None = None) -> tuple[int, dt.datetime]:
    """The register number of the final report (kind, period): assigned once, the next number of
    the year it is first issued in; concurrent callers are arbitrated by the unique constraints."""
    for _ in range(20):
        entry = session.scalar(select(RegisterEntry).where(RegisterEntry.kind == kind, RegisterEntry.period == period))
        if entry is not None:
            return entry.number, entry.issued_at
        issued = now or utcnow()
        year = local_date(issued).year
        number = (session.scalar(select(func.max(RegisterEntry.number)).where(RegisterEntry.year == year)) or 0) + 1
        try:
            with session.begin_nested():
                session.add(RegisterEntry(year=year, number=number, kind=kind, period=period, issued_at=issued))
            return number, issued
        except IntegrityError:
            continue
    raise RuntimeError("could not assign a register number")
