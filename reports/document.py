"""The document model both HTML and PDF are drawn from, so the two always say the same thing.

A report is laid out as a Vietnamese administrative report (Decree 30/2020/NĐ-CP): the
heading (issuing body, Quốc hiệu and Tiêu ngữ, number, place and date), "BÁO CÁO" with its
subject, a body of short sections, the signature block and "Nơi nhận", then appendices with
the detailed tables and figures (numbered "Bảng n" / "Hình n" through the whole document).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from . import fmt
from .i18n import COLUMNS, GATEWAY_REASONS, KPI, RULES, SEVERITY, SHEETS, STATE, VPN_EVENTS, pick
from .official import Issuer

MAX_DISPLAY_ROWS = 40  # long lists are cut in HTML/PDF; XLSX/CSV always hold every row
RATE_COLUMNS = {"rate", "share", "compliance_rate", "gateway_deny_rate", "coverage"}
COUNT_COLUMNS = {"enrolled", "new_in_month", "pending", "handed_over", "checked_out_in_month", "devices", "episodes",
                 "eligible", "updated", "updated_in_month", "still_behind", "count", "allow", "deny", "total",
                 "acknowledged", "open", "fleet_enrolled", "never_compliant", "gateway_denied", "cert_renewals",
                 "cert_late_renewals", "vpn_cuts", "seq"}


@dataclass
class Table:
    number: int
    caption: str
    frame: pd.DataFrame  # display strings
    note: str = ""


@dataclass
class Figure:
    number: int
    caption: str
    png: bytes


@dataclass
class Section:
    title: str
    level: int = 1  # 1: "I. …" body part; 2: "1. …" within it
    blocks: list = field(default_factory=list)  # str (paragraph) | ("bullet", str) | Table | Figure


@dataclass
class Head:
    parent: str
    unit: str
    number_line: str
    nation: str
    motto: str
    date_line: str
    kind: str          # "BÁO CÁO"
    subject: str
    notice: str = ""   # provisional: the part of the period covered


@dataclass
class Closing:
    signer_title: str
    signer_name: str
    recipients_title: str
    recipients: list[str]


@dataclass
class Document:
    lang: str
    title: str
    head: Head
    body: list[Section]
    closing: Closing
    appendix: list[Section]
    sheets: dict[str, pd.DataFrame]  # localized headers, raw values (for XLSX / CSV)
    sheet_keys: dict[str, str]       # sheet title -> canonical table key (CSV file names)
    pinned_time: dt.datetime         # timestamp written into file metadata


class Numbering:
    """Tables and figures numbered through the whole document."""

    def __init__(self, lang: str):
        self.lang, self.tables, self.figures = lang, 0, 0

    def table(self, caption: str, frame: pd.DataFrame, note: str = "") -> Table:
        self.tables += 1
        return Table(self.tables, f"{'Bảng' if self.lang == 'vi' else 'Table'} {self.tables}. {caption}", frame, note)

    def figure(self, caption: str, png: bytes) -> Figure:
        self.figures += 1
        return Figure(self.figures, f"{'Hình' if self.lang == 'vi' else 'Figure'} {self.figures}. {caption}", png)


def heading(issuer: Issuer, lang: str, number: int | None, issued_on: dt.date, subject: str, notice: str = "") -> Head:
    vi = lang == "vi"
    return Head(parent=issuer.shown("parent", lang), unit=issuer.shown("unit", lang),
                number_line=issuer.number_line(number, lang),
                nation="CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" if vi else "SOCIALIST REPUBLIC OF VIET NAM",
                motto="Độc lập - Tự do - Hạnh phúc" if vi else "Independence - Freedom - Happiness",
                date_line=fmt.issue_date_line(issuer.shown("place", lang), issued_on, lang),
                kind="BÁO CÁO" if vi else "REPORT", subject=subject, notice=notice)


def closing(issuer: Issuer, lang: str) -> Closing:
    return Closing(issuer.shown("signer_title", lang), issuer.signer_name,
                   "Nơi nhận:" if lang == "vi" else "Recipients:", issuer.recipient_lines(lang))


# ------------------------------------------------------------------ values as a reader sees them
def unit_names(df: pd.DataFrame, lang: str) -> pd.Series:
    """The unit's name in the reader's language (the Vietnamese one where no English name is set)."""
    if lang == "vi":
        return df["unit_name_vi"]
    en = df["unit_name_en"].fillna("") if "unit_name_en" in df.columns else df["unit_name_vi"]
    return en.where(en != "", df["unit_name_vi"])


def label_values(df: pd.DataFrame, lang: str, keep_codes: bool = False) -> pd.DataFrame:
    """Codes (states, rules, reasons, commands, units) → the phrase of the language."""
    from ipad_mdm.security_events import title

    df = df.copy()
    if "unit_name_vi" in df.columns:
        names = unit_names(df, lang)
        at = list(df.columns).index("unit_name_vi")
        df = df.drop(columns=[c for c in ("unit_name_vi", "unit_name_en") if c in df.columns])
        if not keep_codes and "unit_code" in df.columns:  # the reader sees the unit's name where its code stood
            at = list(df.columns).index("unit_code")
            df = df.drop(columns=["unit_code"])
        df.insert(min(at, len(df.columns)), "unit_name", names)
    mapping = {"rule": RULES, "reason_code": GATEWAY_REASONS, "state_at_end": STATE, "event": VPN_EVENTS,
               "indicator": KPI, "severity": SEVERITY}
    for col, table in mapping.items():
        if col in df.columns:
            df[col] = df[col].map(lambda v, t=table: pick(t, v, lang) if isinstance(v, str) else v)
    if "token_state" in df.columns or "why" in df.columns:
        from usb_tokens import service as tokens

        from .i18n import TOKEN_NOT_RETURNED

        for col, table in (("token_state", tokens.STATE_LABELS), ("why", TOKEN_NOT_RETURNED)):
            if col in df.columns:
                df[col] = df[col].map(lambda v, t=table: pick(t, v, lang) if isinstance(v, str) else v)
    if "ddm_reason" in df.columns:
        from declarative import reasons

        df["ddm_reason"] = df["ddm_reason"].map(lambda v: reasons.describe(v, lang) if isinstance(v, str) else "")
    if "request_type" in df.columns:
        from .i18n import COMMANDS

        df["request_type"] = df["request_type"].map(lambda v: pick(COMMANDS, v, lang))
    if "decision" in df.columns:
        df["decision"] = df["decision"].map(lambda d: pick(COLUMNS, d, lang) if d in ("allow", "deny") else d)
    if "kind" in df.columns:
        df["kind"] = df["kind"].map(lambda k: title(k, lang))
    if "summary_vi" in df.columns:
        df["summary"] = df["summary_vi"] if lang == "vi" else df["summary_en"]
        df = df.drop(columns=["summary_vi", "summary_en"])
    if "failing_rules" in df.columns:
        df["failing_rules"] = df["failing_rules"].map(
            lambda s: "; ".join(pick(RULES, r.strip(), lang) for r in str(s).split(",") if r.strip()) if s else "")
    if "late" in df.columns:
        df["late"] = df["late"].map(lambda v: ("Có" if lang == "vi" else "Yes") if v else ("Không" if lang == "vi" else "No"))
    if "status" in df.columns:
        from .i18n import COMMAND_STATUS

        df["status"] = df["status"].map(lambda v: pick(COMMAND_STATUS, v, lang))
    if "requested_by" in df.columns:
        from .i18n import REQUESTERS

        df["requested_by"] = df["requested_by"].map(lambda v: pick(REQUESTERS, v, lang) if isinstance(v, str) else v)
    return df


def sheet_frame(df: pd.DataFrame, lang: str) -> pd.DataFrame:
    """For XLSX / CSV: translated labels, raw values (rates in percent, times in local time)."""
    out = label_values(df, lang, keep_codes=True)
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = out[col].map(lambda v: "" if fmt.missing(v) else fmt._local(v).strftime("%Y-%m-%d %H:%M"))
        elif col in RATE_COLUMNS:
            out[col] = out[col].map(lambda v: None if fmt.missing(v) else round(float(v) * 100, 4))
    return out.rename(columns={c: pick(COLUMNS, c, lang) for c in out.columns})


def _cell(col: str, v, lang: str) -> str:
    if fmt.missing(v):
        return fmt.NO_DATA
    if isinstance(v, (pd.Timestamp, dt.datetime)):
        return fmt.datetime(v, lang)
    if col in ("date", "lost_on") and isinstance(v, str):
        return fmt.iso_date(v, lang)
    if col == "month" and isinstance(v, str):
        return fmt.month_label(v, lang, short=True)
    if col in RATE_COLUMNS:
        return fmt.percent(v, lang)
    if isinstance(v, bool):
        return str(v)
    if col in COUNT_COLUMNS and isinstance(v, (int, float)):
        return fmt.count(v, lang)
    if isinstance(v, float):
        return fmt.number(v, lang, 1 if col.endswith(("hours", "days", "_days")) else 2)
    if isinstance(v, int):
        return fmt.count(v, lang)
    if hasattr(v, "item"):
        return _cell(col, v.item(), lang)
    return str(v)


def display_frame(df: pd.DataFrame, lang: str) -> pd.DataFrame:
    labelled = label_values(df, lang)
    out = pd.DataFrame({pick(COLUMNS, c, lang): [_cell(c, v, lang) for v in labelled[c]] for c in labelled.columns})
    return out


def add_table(blocks: list, num: Numbering, caption: str, df: pd.DataFrame | None, lang: str, empty: str) -> None:
    """A numbered table, cut to MAX_DISPLAY_ROWS; an empty one is a sentence, not a table."""
    if df is None or df.empty:
        blocks.append(empty)
        return
    note = ""
    if len(df) > MAX_DISPLAY_ROWS:
        more = len(df) - MAX_DISPLAY_ROWS
        note = (f"Bảng chỉ nêu {MAX_DISPLAY_ROWS}/{fmt.count(len(df), lang)} dòng; {fmt.count(more, lang)} dòng còn lại có trong tệp XLSX."
                if lang == "vi" else f"{MAX_DISPLAY_ROWS} of {fmt.count(len(df), lang)} rows shown; the other {more} are in the XLSX file.")
    blocks.append(num.table(caption, display_frame(df.head(MAX_DISPLAY_ROWS), lang), note))


def add_figure(blocks: list, num: Numbering, caption: str, png: bytes | None, why_not: str) -> None:
    blocks.append(num.figure(caption, png) if png else why_not)


def sheets_of(tables: dict[str, pd.DataFrame], lang: str) -> tuple[dict, dict]:
    sheets, keys = {}, {}
    for key, df in tables.items():
        name = pick(SHEETS, key, lang)[:31]
        sheets[name] = sheet_frame(df, lang)
        keys[name] = key
    return sheets, keys

