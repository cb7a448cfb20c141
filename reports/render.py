"""Outputs: one language-specific document model, rendered to HTML and PDF (same content),
and the tables to XLSX (one sheet per table) and CSV (a zip of one CSV per table).

Determinism: charts carry no timestamp metadata, the PDF is written in reportlab's
invariant mode, XLSX properties and ZIP entry times are pinned to the period, and every
table arrives already sorted — so the same data gives byte-identical files.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and the web process have no display
import matplotlib.pyplot as plt
import pandas as pd

from . import i18n
from .i18n import (
    COLUMNS,
    COMMANDS,
    GATEWAY_REASONS,
    KPI,
    RULES,
    SHEETS,
    STATE,
    VPN_EVENTS,
    pick,
    text,
)
from .periods import LOCAL_TZ, Month

MAX_DISPLAY_ROWS = 40  # long lists are cut in HTML/PDF; XLSX/CSV always hold every row
FONT_DIR = Path(os.environ.get("IPAD_MDM_REPORT_FONT_DIR", "/usr/share/fonts/truetype/dejavu"))
RATE_COLUMNS = {"rate", "share", "compliance_rate", "gateway_deny_rate"}


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text; a leading "**" means bold
    charts: list[tuple[str, bytes]] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # display-formatted strings


@dataclass
class Document:
    lang: str
    title: str
    subtitle: str
    meta: str
    sections: list[Section]
    sheets: dict[str, pd.DataFrame]  # localized headers, raw values (for XLSX / CSV)
    sheet_keys: dict[str, str]       # sheet title -> canonical table key (CSV file names)
    pinned_time: dt.datetime         # timestamp written into file metadata


# ------------------------------------------------------------------ value formatting
def _local(ts) -> str:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)) or ts is pd.NaT:
        return ""
    return pd.Timestamp(ts).tz_convert(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


def _label_values(df: pd.DataFrame, lang: str) -> pd.DataFrame:
    """Localise codes (states, rules, reasons, commands) and pick the unit name of the language."""
    df = df.copy()
    if "unit_name_vi" in df.columns:
        df["unit_name"] = df["unit_name_vi"] if lang == "vi" else df["unit_name_en"].where(df["unit_name_en"] != "", df["unit_name_vi"])
        df = df.drop(columns=["unit_name_vi", "unit_name_en"])
    if "rule" in df.columns:
        df["rule"] = df["rule"].map(lambda r: f"{pick(RULES, r, lang)} ({r})")
    if "reason_code" in df.columns:
        df["reason_code"] = df["reason_code"].map(lambda r: f"{pick(GATEWAY_REASONS, r, lang)} ({r})")
    if "request_type" in df.columns:
        df["request_type"] = df["request_type"].map(lambda r: f"{pick(COMMANDS, r, lang)} ({r})")
    if "decision" in df.columns:
        df["decision"] = df["decision"].map(lambda d: text(d, lang) if d in ("allow", "deny") else d)
    if "state_at_end" in df.columns:
        df["state_at_end"] = df["state_at_end"].map(lambda s: pick(STATE, s, lang))
    if "event" in df.columns:
        df["event"] = df["event"].map(lambda e: pick(VPN_EVENTS, e, lang))
    if "indicator" in df.columns:
        df["indicator"] = df["indicator"].map(lambda k: pick(KPI, k, lang))
    if "severity" in df.columns:
        df["severity"] = df["severity"].map(lambda v: pick(i18n.SEVERITY, v, lang))
    if "kind" in df.columns:
        from ipad_mdm.security_events import title

        df["kind"] = df["kind"].map(lambda k: title(k, lang))
    if "summary_vi" in df.columns:
        df["summary"] = df["summary_vi"] if lang == "vi" else df["summary_en"]
        df = df.drop(columns=["summary_vi", "summary_en"])
    for col in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[col]):
            df[col] = df[col].map(_local)
        elif col in RATE_COLUMNS:
            df[col] = df[col].map(lambda v: None if v is None or v != v else round(float(v) * 100, 4))
    if "late" in df.columns:
        df["late"] = df["late"].map(lambda v: ("Có" if lang == "vi" else "Yes") if v else ("Không" if lang == "vi" else "No"))
    return df


def _headers(df: pd.DataFrame, lang: str) -> pd.DataFrame:
    return df.rename(columns={c: pick(COLUMNS, c, lang) for c in df.columns})


def sheet_frame(df: pd.DataFrame, lang: str) -> pd.DataFrame:
    return _headers(_label_values(df, lang), lang)


def _fmt_cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        # Counts arrive as floats when a column mixes them with rates: show them as counts.
        return f"{v:,.0f}" if v.is_integer() or abs(v) >= 1e6 else f"{v:,.2f}"
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def display_frame(df: pd.DataFrame, lang: str) -> pd.DataFrame:
    out = sheet_frame(df, lang)
    return out.astype(object).map(_fmt_cell) if len(out) else out


def summary_frame(mom: pd.DataFrame) -> pd.DataFrame:
    """Month-over-month table: rates shown in %, their change in percentage points."""
    df = mom.copy()
    pp = df["unit"] == "pp"
    for col in ("value", "previous"):
        df[col] = [None if v is None or v != v else (float(v) * 100 if p else v) for v, p in zip(df[col], pp)]
    return df[["indicator", "value", "previous", "change"]]


# ------------------------------------------------------------------ charts
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def chart_line(x, y, title, ylim=(0, 100)) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(list(x), list(y), marker="o", markersize=3, color="#1f5fa8")
    ax.set_title(title, fontsize=11)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    return _png(fig)


def chart_bar(labels, values, title, horizontal=False, color="#1f5fa8") -> bytes:
    fig, ax = plt.subplots(figsize=(8, max(2.6, 0.35 * len(labels) + 1) if horizontal else 3.2))
    labels = [str(v) for v in labels]
    if horizontal:
        ax.barh(labels[::-1], list(values)[::-1], color=color)
    else:
        ax.bar(labels, list(values), color=color)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, axis="x" if horizontal else "y")
    return _png(fig)


def chart_stacked(x, a, b, labels, title) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = [str(v)[-2:] for v in x]
    ax.bar(x, list(a), color="#2e8b57", label=labels[0])
    ax.bar(x, list(b), bottom=list(a), color="#c0392b", label=labels[1])
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    return _png(fig)


# ------------------------------------------------------------------ document builders
def _table_section(sec: Section, caption: str, df: pd.DataFrame, lang: str) -> None:
    if df is None or df.empty:
        sec.paragraphs.append(f"{caption}: {text('no_data', lang)}")
        return
    shown = df.head(MAX_DISPLAY_ROWS)
    if len(df) > MAX_DISPLAY_ROWS:
        more = len(df) - MAX_DISPLAY_ROWS
        caption += f" ({MAX_DISPLAY_ROWS}/{len(df)} — " + (f"xem {more} dòng còn lại trong tệp XLSX)" if lang == "vi" else f"{more} more rows in the XLSX file)")
    sec.tables.append((caption, display_frame(shown, lang)))


def monthly_document(current, previous, mom: pd.DataFrame, lang: str, opts) -> Document:
    m: Month = current.month
    t = current.tables
    start, end = m.days[0].isoformat(), m.days[-1].isoformat()
    secs: list[Section] = []

    s = Section(text("summary", lang))
    _table_section(s, text("summary", lang)[3:], summary_frame(mom), lang)
    secs.append(s)

    s = Section(text("fleet", lang))
    _table_section(s, text("fleet", lang)[3:], t["fleet"], lang)
    secs.append(s)

    s = Section(text("compliance", lang))
    daily = t["compliance_daily"]
    rate = current.kpis.get("compliance_rate")
    s.paragraphs.append((f"Tỷ lệ tuân thủ của tháng: {rate * 100:.2f}% trên {current.kpis['device_days']:.2f} thiết bị-ngày."
                         if lang == "vi" else f"Compliance rate for the month: {rate * 100:.2f}% over {current.kpis['device_days']:.2f} device-days.")
                        if rate is not None else text("no_data", lang))
    s.charts.append((text("chart_compliance", lang), chart_line(daily["date"], daily["rate"].fillna(0) * 100, text("chart_compliance", lang))))
    cu = t["compliance_units"]
    if len(cu):
        s.charts.append((text("chart_units", lang), chart_bar(cu["unit_code"], cu["rate"] * 100, text("chart_units", lang))))
    _table_section(s, text("compliance_units", lang), cu, lang)
    _table_section(s, text("compliance_daily", lang), daily, lang)
    secs.append(s)

    s = Section(text("rules", lang))
    rules = t["rules"]
    if len(rules):
        s.charts.append((text("chart_rules", lang), chart_bar([pick(RULES, r, lang) for r in rules["rule"]], rules["device_days"],
                                                               text("chart_rules", lang), horizontal=True, color="#c0392b")))
    _table_section(s, text("rules", lang)[3:], rules, lang)
    _table_section(s, text("never", lang), t["never_compliant"], lang)
    secs.append(s)

    s = Section(text("remediation", lang))
    k = current.kpis
    if k["remediation_episodes"]:
        s.paragraphs.append(
            f"{k['remediation_episodes']} lần khắc phục; trung bình {k['remediation_mean_hours']:.2f} giờ; p90 {k['remediation_p90_hours']:.2f} giờ; "
            f"{k['open_episodes']} thiết bị chưa khắc phục xong cuối kỳ." if lang == "vi" else
            f"{k['remediation_episodes']} episodes; mean {k['remediation_mean_hours']:.2f} h; p90 {k['remediation_p90_hours']:.2f} h; "
            f"{k['open_episodes']} still open at the end of the period.")
    _table_section(s, text("remediation", lang)[3:], t["remediation_units"], lang)
    _table_section(s, text("remediation_episodes", lang), t["remediation_episodes"], lang)
    secs.append(s)

    s = Section(text("os", lang))
    osd = t["os_spread"]
    if len(osd):
        s.charts.append((text("chart_os", lang), chart_bar(osd["os_version"], osd["devices"], text("chart_os", lang))))
    _table_section(s, text("chart_os", lang), osd, lang)
    _table_section(s, text("os", lang)[3:], t["patch_latency"], lang)
    secs.append(s)

    s = Section(text("certs", lang))
    s.paragraphs.append(
        f"Hết hạn trong 30 ngày: {k['certs_expiring_30d']}; trong 60 ngày: {k['certs_expiring_60d']}; đã hết hạn: {k['certs_expired']}; "
        f"gia hạn: {k['cert_renewals']} (muộn: {k['cert_late_renewals']})." if lang == "vi" else
        f"Expiring within 30 days: {k['certs_expiring_30d']}; within 60 days: {k['certs_expiring_60d']}; expired: {k['certs_expired']}; "
        f"renewals: {k['cert_renewals']} (late: {k['cert_late_renewals']}).")
    _table_section(s, text("certs_expiring", lang, days=max(opts.cert_windows)), t["certs_expiring"], lang)
    _table_section(s, text("cert_renewals", lang), t["cert_renewals"], lang)
    secs.append(s)

    s = Section(text("gateway", lang))
    gd = t["gateway_daily"]
    s.charts.append((text("chart_gateway", lang), chart_stacked(gd["date"], gd["allow"], gd["deny"],
                                                                (text("allow", lang), text("deny", lang)), text("chart_gateway", lang))))
    _table_section(s, text("gateway", lang)[3:], t["gateway_reasons"], lang)
    _table_section(s, text("gateway", lang)[3:], t["gateway_units"], lang)
    secs.append(s)

    s = Section(text("actions", lang))
    _table_section(s, text("actions", lang)[3:], t["protective_actions"], lang)
    _table_section(s, text("actions", lang)[3:], t["protective_events"], lang)
    secs.append(s)

    s = Section(text("vpn", lang))
    s.paragraphs.append(
        f"Ngắt: {k['vpn_cuts']} lượt ({k['vpn_devices_cut']} thiết bị); khôi phục: {k['vpn_restores']} lượt." if lang == "vi" else
        f"Cuts: {k['vpn_cuts']} ({k['vpn_devices_cut']} devices); restores: {k['vpn_restores']}.")
    _table_section(s, text("vpn", lang)[4:], t["vpn_events"], lang)
    secs.append(s)

    s = Section(text("incidents", lang))
    s.paragraphs.append(
        f"Sự cố an toàn thông tin trong tháng: {k['security_events']} sự kiện, trong đó {k['security_incidents']} ở mức "
        f"nghiêm trọng hoặc cao; {k['takeover_attempts']} lần cố gắng chiếm quyền định danh thiết bị." if lang == "vi" else
        f"Security events in the month: {k['security_events']}, of which {k['security_incidents']} critical or high; "
        f"{k['takeover_attempts']} attempts to take over a device identity.")
    _table_section(s, text("incidents", lang)[4:], t["incidents"], lang)
    _table_section(s, text("incident_events", lang), t["incident_events"], lang)
    cp = t["audit_checkpoint"]
    if len(cp):
        row = cp.iloc[0]
        s.paragraphs.append(text("audit_checkpoint", lang, seq=int(row["seq"]), hash=row["head_hash"], at=_local(row["at"])))
    else:
        s.paragraphs.append(text("audit_checkpoint_none", lang))
    secs.append(s)

    s = Section(text("method", lang), paragraphs=[p.format(late=opts.late_renewal_days) for p in i18n.METHOD[lang]])
    secs.append(s)

    sheet_tables = {"summary": summary_frame(mom), **t}
    return _document(lang, text("title_monthly", lang), text("subtitle_monthly", lang, period=str(m), previous=str(m.previous)),
                     text("generated", lang, start=start, end=end), secs, sheet_tables, m.end)


def yearly_document(year_fig, lang: str, thresholds) -> Document:
    y = year_fig.year
    t = year_fig.tables
    secs: list[Section] = []
    s = Section(text("summary", lang))
    k = year_fig.kpis
    rows = [{"indicator": key, "value": (k[key] * 100 if key == "compliance_rate" and k[key] is not None else k[key])}
            for key in ("compliance_rate", "remediation_mean_hours", "remediation_p90_hours", "gateway_denied", "cert_renewals",
                        "cert_late_renewals", "vpn_cuts", "patch_latency_mean_days")]
    _table_section(s, text("summary", lang)[3:], pd.DataFrame(rows), lang)
    secs.append(s)

    s = Section(text("trends", lang))
    tr = t["trends"]
    s.charts.append((text("chart_trend", lang), chart_line(tr["month"], tr["compliance_rate"].astype(float).fillna(0) * 100, text("chart_trend", lang))))
    s.charts.append((text("chart_trend_rem", lang), chart_bar(tr["month"], tr["remediation_mean_hours"].astype(float).fillna(0), text("chart_trend_rem", lang))))
    s.charts.append((text("chart_trend_deny", lang), chart_bar(tr["month"], tr["gateway_denied"].astype(float).fillna(0), text("chart_trend_deny", lang), color="#c0392b")))
    _table_section(s, text("trends", lang)[3:], tr, lang)
    secs.append(s)

    s = Section(text("recommendations", lang))
    if not year_fig.recommendations:
        s.paragraphs.append(text("no_recommendations", lang))
    for i, r in enumerate(year_fig.recommendations, 1):
        s.paragraphs.append(f"**{i}. {r['text_' + lang]}")
        s.paragraphs.append(f"{text('evidence', lang)}: {r['evidence_' + lang]}")
    secs.append(s)

    for key in ("year_rules", "year_units", "year_deny"):
        s = Section(text(key, lang))
        _table_section(s, text(key, lang)[3:], t[key], lang)
        secs.append(s)
    th_lines = [f"{name} = {value}" for name, value in vars(thresholds).items()]
    secs.append(Section(text("threshold", lang), paragraphs=[", ".join(th_lines)] + [p.format(late=thresholds.late_renewal_days) for p in i18n.METHOD[lang]]))
    recs = t["recommendations"].copy()
    recs = pd.DataFrame({"recommendation": recs["text_" + lang], "evidence": recs["evidence_" + lang],
                         "threshold": recs["threshold"]}) if len(recs) else pd.DataFrame(columns=["recommendation", "evidence", "threshold"])
    sheet_tables = {"trends": tr, "recommendations": recs, "year_rules": t["year_rules"], "year_units": t["year_units"],
                    "year_deny": t["year_deny"]}
    end = Month(y, 12).end
    return _document(lang, text("title_yearly", lang), text("subtitle_yearly", lang, period=y, next=y + 1),
                     text("generated", lang, start=f"{y}-01-01", end=f"{y}-12-31"), secs, sheet_tables, end)


def _document(lang, title, subtitle, meta, secs, sheet_tables, pinned) -> Document:
    sheets, keys = {}, {}
    for key, df in sheet_tables.items():
        name = pick(SHEETS, key, lang)[:31]
        sheets[name] = sheet_frame(df, lang)
        keys[name] = key
    return Document(lang, title, subtitle, meta, secs, sheets, keys, pinned)


# ------------------------------------------------------------------ HTML
_CSS = """body{font-family:"DejaVu Sans",Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em;color:#1f3f6e}h2{font-size:1.2em;color:#1f3f6e;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em}th,td{border:1px solid #bbb;padding:3px 6px;text-align:left}
th{background:#e8eef7}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}.meta{color:#555}"""


def to_html(doc: Document) -> bytes:
    out = [f'<!DOCTYPE html><html lang="{doc.lang}"><head><meta charset="utf-8"><title>{html.escape(doc.title)}</title>',
           f"<style>{_CSS}</style></head><body>",
           f"<p>{html.escape(text('org', doc.lang))}</p><h1>{html.escape(doc.title)}</h1>",
           f"<p><b>{html.escape(doc.subtitle)}</b></p><p class=meta>{html.escape(doc.meta)}</p>"]
    for sec in doc.sections:
        out.append(f"<section><h2>{html.escape(sec.title)}</h2>")
        for p in sec.paragraphs:
            out.append(f"<p><b>{html.escape(p[2:])}</b></p>" if p.startswith("**") else f"<p>{html.escape(p)}</p>")
        for caption, png in sec.charts:
            b64 = base64.b64encode(png).decode()
            out.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for caption, df in sec.tables:
            out.append(f"<h3>{html.escape(caption)}</h3><table><thead><tr>")
            out.extend(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            out.append("</tr></thead><tbody>")
            for row in df.itertuples(index=False):
                out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
            out.append("</tbody></table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out).encode("utf-8")


# ------------------------------------------------------------------ PDF
_FONTS: dict = {}


def _register_fonts() -> tuple[str, str]:
    """DejaVu Sans (Debian fonts-dejavu-core) has every Vietnamese diacritic; reportlab's
    built-in Helvetica has none, so the PDF refuses to fall back silently."""
    if _FONTS:
        return _FONTS["regular"], _FONTS["bold"]
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    regular, bold = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
    if not regular.exists():
        raise RuntimeError(f"font {regular} not found: install Debian package fonts-dejavu-core "
                           "or set IPAD_MDM_REPORT_FONT_DIR to a folder holding DejaVuSans.ttf")
    pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
    pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold if bold.exists() else regular)))
    from reportlab.lib.fonts import addMapping

    addMapping("DejaVuSans", 0, 0, "DejaVuSans")
    addMapping("DejaVuSans", 1, 0, "DejaVuSans-Bold")
    addMapping("DejaVuSans", 0, 1, "DejaVuSans")
    addMapping("DejaVuSans", 1, 1, "DejaVuSans-Bold")
    _FONTS.update(regular="DejaVuSans", bold="DejaVuSans-Bold")
    return "DejaVuSans", "DejaVuSans-Bold"


def to_pdf(doc: Document) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import cm
    from reportlab.platypus import (
        Image,
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    regular, bold = _register_fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=9.5, leading=12.5, spaceAfter=4)
    cell = ParagraphStyle("cell", fontName=regular, fontSize=7.2, leading=8.8)
    head = ParagraphStyle("head", parent=cell, fontName=bold)
    h1 = ParagraphStyle("h1", fontName=bold, fontSize=15, leading=19, spaceAfter=6, textColor=colors.HexColor("#1f3f6e"))
    h2 = ParagraphStyle("h2", fontName=bold, fontSize=12, leading=15, spaceBefore=10, spaceAfter=5, textColor=colors.HexColor("#1f3f6e"))
    h3 = ParagraphStyle("h3", fontName=bold, fontSize=9.5, leading=12, spaceBefore=6, spaceAfter=3)
    width = A4[0] - 3.6 * cm

    def esc(s) -> str:
        return html.escape(str(s))

    story = [Paragraph(esc(text("org", doc.lang)), body), Paragraph(esc(doc.title), h1),
             Paragraph(f"<b>{esc(doc.subtitle)}</b>", body), Paragraph(esc(doc.meta), body)]
    for sec in doc.sections:
        story.append(Paragraph(esc(sec.title), h2))
        for p in sec.paragraphs:
            story.append(Paragraph(f"<b>{esc(p[2:])}</b>" if p.startswith("**") else esc(p), body))
        for caption, png in sec.charts:
            img = Image(io.BytesIO(png))
            scale = min(width / img.imageWidth, 7.5 * cm / img.imageHeight)
            img.drawWidth, img.drawHeight = img.imageWidth * scale, img.imageHeight * scale
            story.append(KeepTogether([img, Paragraph(esc(caption), cell)]))
        for caption, df in sec.tables:
            data = [[Paragraph(esc(c), head) for c in df.columns]]
            data += [[Paragraph(esc(v), cell) for v in row] for row in df.itertuples(index=False)]
            tbl = Table(data, colWidths=[width / max(len(df.columns), 1)] * len(df.columns), repeatRows=1)
            tbl.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
                                     ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
                                     ("VALIGN", (0, 0), (-1, -1), "TOP")]))
            story += [Paragraph(esc(caption), h3), tbl, Spacer(1, 4)]

    def footer(canvas, d):
        canvas.saveState()
        canvas.setFont(regular, 7.5)
        canvas.drawString(1.8 * cm, 1.1 * cm, doc.title[:110])
        canvas.drawRightString(A4[0] - 1.8 * cm, 1.1 * cm, f"{text('page', doc.lang)} {d.page}")
        canvas.restoreState()

    buf = io.BytesIO()
    pdf = SimpleDocTemplate(buf, pagesize=A4, leftMargin=1.8 * cm, rightMargin=1.8 * cm, topMargin=1.6 * cm,
                            bottomMargin=1.8 * cm, title=doc.title, author=text("org", doc.lang), subject=doc.subtitle,
                            creator="ipad-mdm reports", invariant=1, lang=doc.lang)
    pdf.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()


# ------------------------------------------------------------------ XLSX / CSV
def _cell_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def to_xlsx(doc: Document) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)
    pinned = doc.pinned_time.astimezone(LOCAL_TZ).replace(tzinfo=None)
    wb.properties.created = wb.properties.modified = pinned
    wb.properties.creator = "ipad-mdm"
    wb.properties.title = doc.title
    for name, df in doc.sheets.items():
        ws = wb.create_sheet(name)
        ws.append([str(c) for c in df.columns])
        for c in ws[1]:
            c.font = Font(bold=True)
        for row in df.itertuples(index=False):
            ws.append([_cell_value(v) for v in row])
        for i, col in enumerate(df.columns, 1):
            longest = max([len(str(col))] + [len(str(v)) for v in df.iloc[:200, i - 1]])
            ws.column_dimensions[ws.cell(1, i).column_letter].width = min(max(10, longest + 2), 60)
        ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return _pin_zip(buf.getvalue(), pinned)


def _pin_zip(data: bytes, when: dt.datetime) -> bytes:
    """Rewrite a ZIP with fixed entry times and a fixed dcterms:modified (openpyxl stamps the
    wall clock on both at save time), so the same data gives a byte-identical workbook."""
    import re

    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"(<dcterms:(?:modified|created)[^>]*>)[^<]*(</dcterms:)", rb"\g<1>" + stamp + rb"\g<2>", body)
            fixed = zipfile.ZipInfo(info.filename, date_time=when.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, body)
    return out.getvalue()


def to_csv_zip(doc: Document) -> bytes:
    when = doc.pinned_time.astimezone(LOCAL_TZ).timetuple()[:6]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for i, (name, df) in enumerate(doc.sheets.items(), 1):
            sio = io.StringIO()
            w = csv.writer(sio, lineterminator="\r\n")
            w.writerow([str(c) for c in df.columns])
            for row in df.itertuples(index=False):
                w.writerow(["" if _cell_value(v) is None else _cell_value(v) for v in row])
            info = zipfile.ZipInfo(f"{i:02d}_{doc.sheet_keys[name]}.csv", date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            # BOM: Excel opens UTF-8 CSV with Vietnamese diacritics correctly only with it.
            z.writestr(info, "\ufeff" + sio.getvalue())
    return out.getvalue()


RENDERERS = {"html": to_html, "pdf": to_pdf, "xlsx": to_xlsx, "csv": to_csv_zip}
EXTENSIONS = {"html": "html", "pdf": "pdf", "xlsx": "xlsx", "csv": "csv.zip"}
MIME = {"html": "text/html; charset=utf-8", "pdf": "application/pdf",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "csv": "application/zip"}
