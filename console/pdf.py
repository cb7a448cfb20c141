"""The handover minute (biên bản bàn giao) and return minute as PDF, with reportlab, laid out like
the office's other signed documents (Decree 30/2020/NĐ-CP): Liberation Serif (Times-compatible, every
Vietnamese diacritic; ipad_mdm.fonts), the issuing body and the Quốc hiệu / Tiêu ngữ with their rules,
a number from the yearly register, the place and date line, and the signature block kept on the page
of the closing line."""
from __future__ import annotations

import datetime as dt
import io
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import HRFlowable, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from ipad_mdm.fonts import SERIF, register_serif

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # the minute shows the office's local date
ORGANISATION = "VĂN PHÒNG CHÍNH PHỦ"
ISSUER = "TRUNG TÂM TIN HỌC"


def vn_date_line(at: dt.datetime, place: str = "Hà Nội") -> str:
    """Decree 30/2020/NĐ-CP: a day below 10 and the months 1-2 take a leading zero, no other month."""
    month = f"{at.month:02d}" if at.month < 3 else str(at.month)
    return f"{place}, ngày {at.day:02d} tháng {month} năm {at.year}"


def _local(iso: str | None) -> dt.datetime:
    value = dt.datetime.fromisoformat(iso) if iso else dt.datetime.now(dt.UTC)
    return value.astimezone(LOCAL_TZ)


def _page_number(canvas, doc) -> None:
    """Decree 30: page numbers at the top centre, from the second page."""
    canvas.saveState()
    canvas.setFont(SERIF, 13)
    canvas.drawCentredString((doc.leftMargin + doc.pagesize[0] - doc.rightMargin) / 2, doc.pagesize[1] - 12 * mm,
                             str(doc.page))
    canvas.restoreState()


def minute_pdf(data: dict, *, event_id: int) -> bytes:
    """Render a minute from its snapshot (HandoverEvent.data). Deterministic for a given snapshot
    (reportlab's invariant mode), so a reprint is byte-identical to the first print."""
    register_serif()
    handover = data.get("kind", "handover") == "handover"
    at = _local(data.get("at"))
    base = ParagraphStyle("base", fontName=SERIF, fontSize=13, leading=17)
    center = ParagraphStyle("center", parent=base, alignment=TA_CENTER)
    center_bold = ParagraphStyle("center_bold", parent=center, fontName=SERIF + "-Bold")
    italic_right = ParagraphStyle("date", parent=center, fontName=SERIF + "-Italic")
    title = ParagraphStyle("title", parent=center_bold, fontSize=14, leading=19, spaceBefore=6, spaceAfter=2)
    bold = ParagraphStyle("bold", parent=base, fontName=SERIF + "-Bold", fontSize=12, leading=15)
    cell = ParagraphStyle("cell", parent=base, fontSize=12, leading=15)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=30 * mm, rightMargin=15 * mm, topMargin=20 * mm,
                            bottomMargin=20 * mm, title="Biên bản bàn giao thiết bị" if handover else
                            "Biên bản thu hồi thiết bị", author="Trung tâm Tin học - Văn phòng Chính phủ",
                            invariant=1)
    p = lambda text, style=base: Paragraph(escape(str(text)), style)
    number = data.get("number") or event_id  # minutes from before the register print their old number
    header = Table([
        [p(ORGANISATION, ParagraphStyle("org", parent=center, fontSize=12)),
         p("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", ParagraphStyle("qh", parent=center_bold, fontSize=12))],
        [p(ISSUER, ParagraphStyle("iss", parent=center_bold, fontSize=12)), p("Độc lập - Tự do - Hạnh phúc", center_bold)],
        [HRFlowable(width=22 * mm, thickness=0.6, color=colors.black, spaceBefore=0, spaceAfter=0),
         HRFlowable(width=58 * mm, thickness=0.6, color=colors.black, spaceBefore=0, spaceAfter=0)],
        [p(f"Số: {number}/BB-TTTH", center), p(vn_date_line(at), italic_right)],
    ], colWidths=[62 * mm, 103 * mm])
    header.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                                ("TOPPADDING", (0, 0), (-1, -1), 1)]))
    story = [header, Spacer(1, 6 * mm),
             p("BIÊN BẢN", title),
             p("Bàn giao máy tính bảng iPad phục vụ xử lý văn bản, hồ sơ công việc" if handover else
               "Thu hồi máy tính bảng iPad phục vụ xử lý văn bản, hồ sơ công việc", center_bold),
             HRFlowable(width=40 * mm, thickness=0.6, color=colors.black, spaceBefore=5, spaceAfter=4),
             Spacer(1, 2 * mm)]
    leader = data.get("leader") or {}
    unit = data.get("unit") or {}
    it_side = ", ".join(filter(None, [data.get("it_officer", ""), data.get("it_position", ""),
                                      "Trung tâm Tin học, Văn phòng Chính phủ"]))
    leader_side = ", ".join(filter(None, [leader.get("full_name", ""), leader.get("title", ""), leader.get("unit_vi", "")]))
    giver, receiver = (it_side, leader_side) if handover else (leader_side, it_side)
    story += [
        p(f"Hôm nay, vào lúc {at:%H} giờ {at:%M} ngày {at:%d/%m/%Y}, tại Văn phòng Chính phủ, chúng tôi gồm:"),
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
        ["Tình trạng thiết bị", data.get("condition") or "Hoạt động bình thường"],
        ["Phụ kiện kèm theo", data.get("accessories") or "Không có"],
    ]
    table = Table([[p(k, bold), p(v, cell)] for k, v in rows], colWidths=[58 * mm, 107 * mm])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f7"))]))
    story += [table, Spacer(1, 4 * mm), p("Cấu hình quản lý (hồ sơ cấu hình) đã cài đặt trên thiết bị:", bold)]
    profiles = data.get("profiles") or []
    if profiles:
        prof = Table([[p("STT", bold), p("Tên hồ sơ", bold), p("Định danh", bold)]] +
                     [[p(i, cell), p(x.get("name", ""), cell), p(x.get("identifier", ""), cell)]
                      for i, x in enumerate(profiles, 1)],
                     colWidths=[15 * mm, 68 * mm, 82 * mm])
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
    closing = p(f"Biên bản kết thúc vào lúc {at:%H} giờ {at:%M} cùng ngày, được lập thành 02 bản có giá trị "
                "pháp lý như nhau, mỗi bên giữ 01 bản; các bên đã đọc lại, thống nhất và cùng ký dưới đây.")
    sign = Table([
        [p("ĐẠI DIỆN BÊN GIAO", center_bold), p("ĐẠI DIỆN BÊN NHẬN", center_bold)],
        [p("(Ký, ghi rõ họ tên)", ParagraphStyle("hint", parent=center, fontName=SERIF + "-Italic")),
         p("(Ký, ghi rõ họ tên)", ParagraphStyle("hint2", parent=center, fontName=SERIF + "-Italic"))],
        [Spacer(1, 24 * mm), Spacer(1, 24 * mm)],
        [p(giver.split(",")[0], center_bold), p(receiver.split(",")[0], center_bold)],
    ], colWidths=[82 * mm, 83 * mm])
    # The closing line, the headings and the names stay on one page (never "ĐẠI DIỆN" on one page and
    # the signatures on the next).
    story.append(KeepTogether([closing, Spacer(1, 6 * mm), sign]))
    doc.build(story, onLaterPages=_page_number)
    return buf.getvalue()
