"""The layout every document the office signs shares (Decree 30/2020/NĐ-CP): the issuing body and the
Quốc hiệu / Tiêu ngữ with their rules, the number and the place-and-date line, page numbers at the top
centre from the second page, the signature block. Used by the handover minutes (console) and the
certificate revocation request for a lost USB token (usb_tokens); reports have their own renderer."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from .fonts import SERIF, register_serif

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # documents show the office's local date
ORGANISATION = "VĂN PHÒNG CHÍNH PHỦ"
ISSUER = "TRUNG TÂM TIN HỌC"
ISSUER_FULL = "Trung tâm Tin học, Văn phòng Chính phủ"


def vn_date_line(at: dt.date, place: str = "Hà Nội") -> str:
    """Decree 30/2020/NĐ-CP: a day below 10 and the months 1-2 take a leading zero, no other month."""
    month = f"{at.month:02d}" if at.month < 3 else str(at.month)
    return f"{place}, ngày {at.day:02d} tháng {month} năm {at.year}"


def local(iso: str | None) -> dt.datetime:
    value = dt.datetime.fromisoformat(iso) if iso else dt.datetime.now(dt.UTC)
    return value.astimezone(LOCAL_TZ)


def page_number(canvas, doc) -> None:
    """Decree 30: page numbers at the top centre, from the second page (pass as onLaterPages)."""
    from reportlab.lib.units import mm

    canvas.saveState()
    canvas.setFont(SERIF, 13)
    canvas.drawCentredString((doc.leftMargin + doc.pagesize[0] - doc.rightMargin) / 2, doc.pagesize[1] - 12 * mm,
                             str(doc.page))
    canvas.restoreState()


@dataclass
class Styles:
    base: object
    center: object
    center_bold: object
    italic: object
    title: object
    bold: object
    cell: object

    def p(self, text, style=None):
        from reportlab.platypus import Paragraph

        return Paragraph(escape(str(text)), style or self.base)


def styles() -> Styles:
    from reportlab.lib.enums import TA_CENTER
    from reportlab.lib.styles import ParagraphStyle

    register_serif()
    base = ParagraphStyle("base", fontName=SERIF, fontSize=13, leading=17)
    center = ParagraphStyle("center", parent=base, alignment=TA_CENTER)
    center_bold = ParagraphStyle("center_bold", parent=center, fontName=SERIF + "-Bold")
    return Styles(base=base, center=center, center_bold=center_bold,
                  italic=ParagraphStyle("italic", parent=center, fontName=SERIF + "-Italic"),
                  title=ParagraphStyle("title", parent=center_bold, fontSize=14, leading=19, spaceBefore=6, spaceAfter=2),
                  bold=ParagraphStyle("bold", parent=base, fontName=SERIF + "-Bold", fontSize=12, leading=15),
                  cell=ParagraphStyle("cell", parent=base, fontSize=12, leading=15))


def header(st: Styles, number: str, at: dt.datetime, subject_line: str | None = None):
    """The two-column heading: issuing body, its rule, the number (and for a letter its "V/v" subject
    line) on the left; Quốc hiệu, Tiêu ngữ, its rule and the date line on the right."""
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import HRFlowable, Table, TableStyle

    p = st.p
    rows = [
        [p(ORGANISATION, ParagraphStyle("org", parent=st.center, fontSize=12)),
         p("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", ParagraphStyle("qh", parent=st.center_bold, fontSize=12))],
        [p(ISSUER, ParagraphStyle("iss", parent=st.center_bold, fontSize=12)), p("Độc lập - Tự do - Hạnh phúc", st.center_bold)],
        [HRFlowable(width=22 * mm, thickness=0.6, color=colors.black, spaceBefore=0, spaceAfter=0),
         HRFlowable(width=58 * mm, thickness=0.6, color=colors.black, spaceBefore=0, spaceAfter=0)],
        [p(f"Số: {number}", st.center), p(vn_date_line(at), st.italic)],
    ]
    if subject_line:
        rows.append([p(subject_line, ParagraphStyle("vv", parent=st.center, fontSize=12, leading=15)), ""])
    table = Table(rows, colWidths=[62 * mm, 103 * mm])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                               ("TOPPADDING", (0, 0), (-1, -1), 1)]))
    return table


def key_value_table(st: Styles, rows: list[tuple[str, str]], widths=(58, 107)):
    """A bordered two-column table of facts (labels shaded)."""
    from reportlab.lib import colors
    from reportlab.lib.units import mm
    from reportlab.platypus import Table, TableStyle

    table = Table([[st.p(k, st.bold), st.p(v, st.cell)] for k, v in rows], colWidths=[w * mm for w in widths])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f7"))]))
    return table


def document(buf, title: str):
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    # invariant: a reprint of the same snapshot is byte-identical to the first print
    return SimpleDocTemplate(buf, pagesize=A4, leftMargin=30 * mm, rightMargin=15 * mm, topMargin=20 * mm,
                             bottomMargin=20 * mm, title=title, author="Trung tâm Tin học - Văn phòng Chính phủ",
                             invariant=1)
