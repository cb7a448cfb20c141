"""The handover minute (biên bản bàn giao) and return minute as PDF, with reportlab.

Vietnamese needs a TrueType font with its diacritics embedded: reportlab's built-in Helvetica has
no glyphs for ạ, ố, ư…, which would print as black boxes. DejaVu Sans (Debian: fonts-dejavu-core)
covers them; IPAD_MDM_PDF_FONT_DIR can point elsewhere.
"""
from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

FONT_DIRS = [os.environ.get("IPAD_MDM_PDF_FONT_DIR", ""), "/usr/share/fonts/truetype/dejavu"]
LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # the minute shows the office's local date
ORGANISATION = "VĂN PHÒNG CHÍNH PHỦ"
ISSUER = "TRUNG TÂM TIN HỌC"
_registered = False


class FontMissing(RuntimeError):
    pass


def _register_fonts() -> None:
    global _registered
    if _registered:
        return
    for folder in filter(None, FONT_DIRS):
        regular, bold = Path(folder) / "DejaVuSans.ttf", Path(folder) / "DejaVuSans-Bold.ttf"
        if regular.exists() and bold.exists():
            pdfmetrics.registerFont(TTFont("VN", str(regular)))
            pdfmetrics.registerFont(TTFont("VN-Bold", str(bold)))
            pdfmetrics.registerFontFamily("VN", normal="VN", bold="VN-Bold", italic="VN", boldItalic="VN-Bold")
            _registered = True
            return
    raise FontMissing("DejaVuSans.ttf not found (install Debian's fonts-dejavu-core or set IPAD_MDM_PDF_FONT_DIR)")


def _local(iso: str | None) -> dt.datetime:
    value = dt.datetime.fromisoformat(iso) if iso else dt.datetime.now(dt.UTC)
    return value.astimezone(LOCAL_TZ)


def minute_pdf(data: dict, *, event_id: int) -> bytes:
    """Render a minute from its snapshot (HandoverEvent.data). Deterministic for a given snapshot
    (reportlab's invariant mode), so a reprint is byte-identical to the first print."""
    _register_fonts()
    handover = data.get("kind", "handover") == "handover"
    at = _local(data.get("at"))
    base = ParagraphStyle("base", fontName="VN", fontSize=10.5, leading=14)
    center = ParagraphStyle("center", parent=base, alignment=TA_CENTER)
    title = ParagraphStyle("title", parent=base, fontName="VN-Bold", fontSize=15, leading=20, alignment=TA_CENTER,
                           spaceBefore=6, spaceAfter=4)
    bold = ParagraphStyle("bold", parent=base, fontName="VN-Bold")
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=18 * mm,
                            bottomMargin=18 * mm, title="Biên bản bàn giao thiết bị" if handover else
                            "Biên bản thu hồi thiết bị", author="Trung tâm Tin học - Văn phòng Chính phủ",
                            invariant=1)
    p = lambda text, style=base: Paragraph(escape(str(text)), style)
    header = Table([
        [p(ORGANISATION, center), p("CỘNG HOÀ XÃ HỘI CHỦ NGHĨA VIỆT NAM", ParagraphStyle("h", parent=center, fontName="VN-Bold"))],
        [p(ISSUER, ParagraphStyle("h2", parent=center, fontName="VN-Bold")), p("Độc lập - Tự do - Hạnh phúc", center)],
        [p(f"Số: {event_id}/BB-TTTH", center),
         p(f"Hà Nội, ngày {at.day:02d} tháng {at.month:02d} năm {at.year}", center)],
    ], colWidths=[70 * mm, 100 * mm])
    header.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    story = [header, Spacer(1, 8 * mm),
             p("BIÊN BẢN BÀN GIAO THIẾT BỊ" if handover else "BIÊN BẢN THU HỒI THIẾT BỊ", title),
             p("(máy tính bảng iPad phục vụ xử lý văn bản, hồ sơ công việc)", center), Spacer(1, 6 * mm)]
    leader = data.get("leader") or {}
    unit = data.get("unit") or {}
    it_side = f"{data.get('it_officer', '')}, Trung tâm Tin học, Văn phòng Chính phủ"
    leader_side = ", ".join(filter(None, [leader.get("full_name", ""), leader.get("title", ""), leader.get("unit_vi", "")]))
    giver, receiver = (it_side, leader_side) if handover else (leader_side, it_side)
    story += [
        p(f"Hôm nay, lúc {at:%H:%M} ngày {at:%d/%m/%Y}, tại Văn phòng Chính phủ, chúng tôi gồm:"),
        Spacer(1, 2 * mm),
        Paragraph("<b>Bên giao (Bên A):</b> " + escape(giver), base),
        Paragraph("<b>Bên nhận (Bên B):</b> " + escape(receiver), base),
        Spacer(1, 3 * mm),
        p("Cùng thống nhất " + ("bàn giao" if handover else "thu hồi") + " thiết bị với thông tin như sau:"),
        Spacer(1, 3 * mm),
    ]
    cert = data.get("certificate") or {}
    rows = [
        ["Thiết bị", data.get("model") or ""],
        ["Mã kiểu máy", data.get("model_number") or ""],
        ["Số sê-ri", data.get("serial_number") or ""],
        ["UDID", data.get("udid") or ""],
        ["Hệ điều hành", f"iPadOS {data['os_version']}" if data.get("os_version") else ""],
        ["Tên thiết bị", data.get("device_name") or ""],
        ["Đơn vị quản lý", unit.get("name_vi", "")],
        ["Chứng thư số thiết bị (số sê-ri)", cert.get("serial", "chưa có")],
        ["Chứng thư có hiệu lực đến", _local(cert["not_after"]).strftime("%d/%m/%Y") if cert.get("not_after") else ""],
    ]
    table = Table([[p(k, bold), p(v)] for k, v in rows], colWidths=[62 * mm, 108 * mm])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f7"))]))
    story += [table, Spacer(1, 4 * mm), p("Cấu hình quản lý (hồ sơ cấu hình) đã cài đặt trên thiết bị:", bold)]
    profiles = data.get("profiles") or []
    if profiles:
        prof = Table([[p("STT", bold), p("Tên hồ sơ", bold), p("Định danh", bold)]] +
                     [[p(i), p(x.get("name", "")), p(x.get("identifier", ""))] for i, x in enumerate(profiles, 1)],
                     colWidths=[12 * mm, 70 * mm, 88 * mm])
        prof.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black)]))
        story.append(prof)
    else:
        story.append(p("(chưa có danh sách hồ sơ cấu hình từ thiết bị)"))
    story += [Spacer(1, 4 * mm)]
    if handover:
        story += [p("Bên B có trách nhiệm quản lý, sử dụng thiết bị đúng mục đích; không xử lý tài liệu có nội dung "
                    "mật trên thiết bị; không gỡ bỏ cấu hình quản lý; báo ngay cho Trung tâm Tin học khi mất "
                    "thiết bị hoặc nghi ngờ lộ lọt thông tin.")]
    else:
        story += [p("Thiết bị được thu hồi về Trung tâm Tin học; quyền truy cập tài liệu của Bên A trên thiết bị "
                    "đã chấm dứt kể từ thời điểm lập biên bản.")]
    story += [p("Biên bản được lập thành 02 bản có giá trị như nhau, mỗi bên giữ 01 bản."), Spacer(1, 10 * mm)]
    sign = Table([
        [p("ĐẠI DIỆN BÊN GIAO", ParagraphStyle("s", parent=center, fontName="VN-Bold")),
         p("ĐẠI DIỆN BÊN NHẬN", ParagraphStyle("s2", parent=center, fontName="VN-Bold"))],
        [p("(Ký, ghi rõ họ tên)", center), p("(Ký, ghi rõ họ tên)", center)],
        [Spacer(1, 28 * mm), Spacer(1, 28 * mm)],
        [p(giver.split(",")[0], center), p(receiver.split(",")[0], center)],
    ], colWidths=[85 * mm, 85 * mm])
    story.append(sign)
    doc.build(story)
    return buf.getvalue()
