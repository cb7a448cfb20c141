"""The document as a PDF laid out under Decree 30/2020/NĐ-CP (Appendix I, administrative documents):
A4; margins top 20 mm, bottom 20 mm, left 30 mm, right 15 mm; Times-compatible serif (Liberation
Serif, metric-compatible with Times New Roman; Debian fonts-liberation) at 13 pt; the issuing body
and the Quốc hiệu / Tiêu ngữ side by side with their rules; "BÁO CÁO" and the subject centred;
page numbers at the top centre from page 2; the signature block on the right, "Nơi nhận" on the left."""
from __future__ import annotations

import html
import io

from ipad_mdm.fonts import SERIF, register_serif as _register_fonts

from .document import Document, Figure, Section, Table


def _col_widths(frame, width: float) -> list[float]:
    """Columns as wide as their content needs (long text wraps, short values never break)."""
    n = len(frame.columns)
    need = []
    for i, col in enumerate(frame.columns):
        cells = [str(v) for v in frame.iloc[:60, i]]
        longest_word = max([len(w) for w in str(col).split()] + [len(c) for c in cells if " " not in c] + [3])
        total = max([len(str(col)) * 0.6] + [len(c) for c in cells] + [3])
        need.append((min(total, 60), longest_word))
    want = [max(t, w) for t, w in need]
    scale = width / sum(want)
    widths = [w * scale for w in want]
    # ~6 pt per character of a bold 10 pt header word, plus the cell padding on both sides.
    floor = [min(w * 6.0 + 14, width / n * 1.6) for _t, w in need]
    for _ in range(3):
        short = [i for i in range(n) if widths[i] < floor[i]]
        if not short:
            break
        extra = sum(floor[i] - widths[i] for i in short)
        rest = [i for i in range(n) if i not in short]
        pool = sum(widths[i] for i in rest) or 1
        for i in short:
            widths[i] = floor[i]
        for i in rest:
            widths[i] -= extra * widths[i] / pool
    return widths


def to_pdf(doc: Document) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_RIGHT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        CondPageBreak,
        Image,
        KeepTogether,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table as RLTable,
        TableStyle,
    )
    from reportlab.platypus.flowables import HRFlowable

    _register_fonts()
    left, right, top, bottom = 30 * mm, 15 * mm, 20 * mm, 20 * mm
    width = A4[0] - left - right
    base = dict(fontName=SERIF, textColor=colors.black)
    body = ParagraphStyle("body", fontSize=13, leading=16.5, alignment=TA_JUSTIFY, firstLineIndent=10 * mm, spaceAfter=5, **base)
    plain = ParagraphStyle("plain", parent=body, firstLineIndent=0)
    bold = ParagraphStyle("bold", parent=plain, fontName=SERIF + "-Bold", spaceBefore=3, spaceAfter=2)
    bullet = ParagraphStyle("bullet", parent=body, firstLineIndent=0, leftIndent=10 * mm, bulletIndent=5 * mm, spaceAfter=2)
    centre = ParagraphStyle("centre", fontSize=13, leading=15.5, alignment=TA_CENTER, **base)
    head12 = ParagraphStyle("head12", parent=centre, fontSize=12.5, leading=15)
    date = ParagraphStyle("date", parent=centre, fontName=SERIF + "-Italic", alignment=TA_RIGHT, fontSize=13.5)
    h1 = ParagraphStyle("h1", parent=plain, fontName=SERIF + "-Bold", spaceBefore=8, spaceAfter=4, keepWithNext=1)
    h2 = ParagraphStyle("h2", parent=h1, fontName=SERIF + "-BoldItalic")
    happ = ParagraphStyle("happ", parent=h1, alignment=TA_CENTER)
    cap = ParagraphStyle("cap", parent=centre, fontName=SERIF + "-Bold", fontSize=12, leading=14.5, spaceBefore=6, spaceAfter=3,
                         keepWithNext=1)
    cell = ParagraphStyle("cell", fontSize=10, leading=12, **base)
    cellh = ParagraphStyle("cellh", parent=cell, fontName=SERIF + "-Bold", alignment=TA_CENTER)
    note = ParagraphStyle("note", parent=plain, fontName=SERIF + "-Italic", fontSize=11, leading=13.5)
    small = ParagraphStyle("small", fontSize=11, leading=13.5, **base)
    smallb = ParagraphStyle("smallb", parent=small, fontName=SERIF + "-BoldItalic", fontSize=12)

    def p(text, style):
        return Paragraph(html.escape(str(text)), style)

    h = doc.head
    left_col = [p(h.parent.upper(), head12), p(h.unit.upper(), ParagraphStyle("u", parent=head12, fontName=SERIF + "-Bold")),
                HRFlowable(width="35%", thickness=0.6, color=colors.black, spaceBefore=1, spaceAfter=6),
                p(h.number_line, centre)]
    right_col = [p(h.nation.upper(), ParagraphStyle("n", parent=head12, fontName=SERIF + "-Bold")),
                 p(h.motto, ParagraphStyle("m", parent=centre, fontName=SERIF + "-Bold", fontSize=13.5)),
                 HRFlowable(width="62%", thickness=0.6, color=colors.black, spaceBefore=1, spaceAfter=6),
                 p(h.date_line, date)]
    header = RLTable([[left_col, right_col]], colWidths=[width * 0.40, width * 0.60])
    header.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    story = [header, Spacer(1, 8 * mm), p(h.kind, ParagraphStyle("k", parent=centre, fontName=SERIF + "-Bold", fontSize=14)),
             p(h.subject, ParagraphStyle("s", parent=centre, fontName=SERIF + "-Bold")),
             HRFlowable(width="25%", thickness=0.6, color=colors.black, spaceBefore=2, spaceAfter=6)]
    if h.notice:
        box = RLTable([[p(h.notice, ParagraphStyle("nt", parent=centre, fontName=SERIF + "-Italic", fontSize=12))]], colWidths=[width])
        box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.8, colors.black)]))
        story += [box, Spacer(1, 4)]

    def blocks(sec: Section, appendix: bool):
        style = (happ if appendix else h1) if sec.level == 1 else h2
        story.append(CondPageBreak(45 * mm))  # a heading never ends a page
        story.append(p(sec.title, style))
        for b in sec.blocks:
            if isinstance(b, tuple) and b[0] == "bullet":
                story.append(Paragraph(html.escape(b[1]), bullet, bulletText="-"))
            elif isinstance(b, Table):
                data = [[p(c, cellh) for c in b.frame.columns]]
                data += [[p(v, cell) for v in row] for row in b.frame.itertuples(index=False)]
                tbl = RLTable(data, colWidths=_col_widths(b.frame, width), repeatRows=1)
                tbl.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                         ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3)]))
                story.extend([CondPageBreak(30 * mm), p(b.caption, cap), tbl])
                if b.note:
                    story.append(p(b.note, note))
                story.append(Spacer(1, 4))
            elif isinstance(b, Figure):
                img = Image(io.BytesIO(b.png))
                tall = img.imageHeight > img.imageWidth * 0.6  # a bar per unit: let it be as tall as it needs
                scale = min(width / img.imageWidth, (190 if tall else 80) * mm / img.imageHeight)
                img.drawWidth, img.drawHeight = img.imageWidth * scale, img.imageHeight * scale
                story.append(KeepTogether([img, p(b.caption, cap)]))
            elif isinstance(b, str) and b.startswith("**"):
                story.append(p(b[2:], bold))
            elif b:
                story.append(p(b, body))

    for sec in doc.body:
        blocks(sec, False)
    c = doc.closing
    recv = [p(c.recipients_title, smallb)] + [p(r, small) for r in c.recipients]
    who = [p(c.signer_title.upper(), ParagraphStyle("st", parent=centre, fontName=SERIF + "-Bold")), Spacer(1, 24 * mm),
           p(c.signer_name or " ", ParagraphStyle("sn", parent=centre, fontName=SERIF + "-Bold"))]
    sign = RLTable([[recv, who]], colWidths=[width * 0.5, width * 0.5])
    sign.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    story += [Spacer(1, 6 * mm), KeepTogether([sign])]
    for i, sec in enumerate(doc.appendix):
        if sec.level == 1:
            story.append(PageBreak())
        blocks(sec, True)

    def page_number(canvas, d):
        if d.page >= 2:  # Decree 30: numbered from page 2, top centre
            canvas.saveState()
            canvas.setFont(SERIF, 13)
            canvas.drawCentredString(left + width / 2, A4[1] - 12 * mm, str(d.page))
            canvas.restoreState()

    buf = io.BytesIO()
    pdf = SimpleDocTemplate(buf, pagesize=A4, leftMargin=left, rightMargin=right, topMargin=top, bottomMargin=bottom,
                            title=doc.title, author=doc.head.unit, subject=doc.head.subject, creator="ipad-mdm reports",
                            invariant=1, lang=doc.lang)
    pdf.build(story, onFirstPage=page_number, onLaterPages=page_number)
    return buf.getvalue()
