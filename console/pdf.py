"""The handover minute (biên bản bàn giao) and return minute as PDF, with reportlab, laid out like
the office's other signed documents (Decree 30/2020/NĐ-CP): Liberation Serif (Times-compatible, every
Vietnamese diacritic; ipad_mdm.fonts), the issuing body and the Quốc hiệu / Tiêu ngữ with their rules,
a number from the yearly register, the place and date line, and the signature block kept on the page
of the closing line."""
from __future__ import annotations

import io
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import HRFlowable, KeepTogether, Paragraph, Spacer, Table, TableStyle

from ipad_mdm.decree30 import ISSUER_FULL, document, header, key_value_table, local, page_number, styles, vn_date_line

__all__ = ["minute_pdf", "vn_date_line"]


def minute_pdf(data: dict, *, event_id: int) -> bytes:
    """Render a minute from its snapshot (HandoverEvent.data). Deterministic for a given snapshot
    (reportlab's invariant mode), so a reprint is byte-identical to the first print."""
    st = styles()
    handover = data.get("kind", "handover") == "handover"
    at = local(data.get("at"))
    base, center_bold, title, bold, cell = st.base, st.center_bold, st.title, st.bold, st.cell
    buf = io.BytesIO()
    doc = document(buf, "Biên bản bàn giao thiết bị" if handover else "Biên bản hoàn trả thiết bị")
    p = st.p
    number = data.get("number") or event_id  # minutes from before the register print their old number
    story = [header(st, f"{number}/BB-TTTH", at), Spacer(1, 6 * mm),
             p("BIÊN BẢN", title),
             p("Bàn giao máy tính bảng iPad phục vụ xử lý văn bản, hồ sơ công việc" if handover else
               "Hoàn trả máy tính bảng iPad phục vụ xử lý văn bản, hồ sơ công việc", center_bold),
             HRFlowable(width=40 * mm, thickness=0.6, color=colors.black, spaceBefore=5, spaceAfter=4),
             Spacer(1, 2 * mm)]
    leader = data.get("leader") or {}
    unit = data.get("unit") or {}
    it_side = ", ".join(filter(None, [data.get("it_officer", ""), data.get("it_position", ""), ISSUER_FULL]))
    leader_side = ", ".join(filter(None, [leader.get("full_name", ""), leader.get("title", ""), leader.get("unit_vi", "")]))
    giver, receiver = (it_side, leader_side) if handover else (leader_side, it_side)
    story += [
        p(f"Hôm nay, vào lúc {at:%H} giờ {at:%M} ngày {at:%d/%m/%Y}, tại Văn phòng Chính phủ, chúng tôi gồm:"),
        Spacer(1, 2 * mm),
        Paragraph("<b>Bên giao (Bên A):</b> " + escape(giver), base),
        Paragraph("<b>Bên nhận (Bên B):</b> " + escape(receiver), base),
        Spacer(1, 3 * mm),
        p("Cùng thống nhất " + ("bàn giao" if handover else "hoàn trả") + " thiết bị với thông tin như sau:"),
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
        ["Chứng thư có hiệu lực đến", local(cert["not_after"]).strftime("%d/%m/%Y") if cert.get("not_after") else ""],
        ["Tình trạng thiết bị", data.get("condition") or "Hoạt động bình thường"],
        ["Phụ kiện kèm theo", data.get("accessories") or "Không có"],
    ]
    story += [key_value_table(st, rows), Spacer(1, 4 * mm), p("Cấu hình quản lý (hồ sơ cấu hình) đã cài đặt trên thiết bị:", bold)]
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
    story += _usb_tokens(st, data.get("usb_tokens") or [], handover)
    if handover:
        story += [p("Bên B có trách nhiệm quản lý, sử dụng thiết bị đúng mục đích; không xử lý tài liệu có nội dung "
                    "mật trên thiết bị; không gỡ bỏ cấu hình quản lý; báo ngay cho Trung tâm Tin học khi mất "
                    "thiết bị hoặc nghi ngờ lộ lọt thông tin.")]
    else:
        story += [p("Thiết bị được hoàn trả cho Trung tâm Tin học; quyền truy cập tài liệu của Bên A trên thiết bị "
                    "đã chấm dứt kể từ thời điểm lập biên bản.")]
    closing = p(f"Biên bản kết thúc vào lúc {at:%H} giờ {at:%M} cùng ngày, được lập thành 02 bản có giá trị "
                "pháp lý như nhau, mỗi bên giữ 01 bản; các bên đã đọc lại, thống nhất và cùng ký dưới đây.")
    sign = Table([
        [p("ĐẠI DIỆN BÊN GIAO", center_bold), p("ĐẠI DIỆN BÊN NHẬN", center_bold)],
        [p("(Ký, ghi rõ họ tên)", st.italic), p("(Ký, ghi rõ họ tên)", st.italic)],
        [Spacer(1, 24 * mm), Spacer(1, 24 * mm)],
        [p(giver.split(",")[0], center_bold), p(receiver.split(",")[0], center_bold)],
    ], colWidths=[82 * mm, 83 * mm])
    # The closing line, the headings and the names stay on one page (never "ĐẠI DIỆN" on one page and
    # the signatures on the next).
    story.append(KeepTogether([closing, Spacer(1, 6 * mm), sign]))
    doc.build(story, onLaterPages=page_number)
    return buf.getvalue()


def _usb_tokens(st, tokens: list[dict], handover: bool) -> list:
    """USB tokens (thiết bị lưu khóa bí mật) handed over or returned on the same minute as the iPad."""
    if not tokens:
        return []
    p = st.p
    head = ("Thiết bị chữ ký số (USB token) bàn giao kèm theo:" if handover
            else "Thiết bị chữ ký số (USB token) hoàn trả kèm theo:")
    rows = [[p("STT", st.bold), p("Số sê-ri, loại", st.bold), p("Chứng thư số ký (người được cấp, tổ chức cấp)", st.bold),
             p("Hiệu lực đến", st.bold)]]
    for i, t in enumerate(tokens, 1):
        until = local(t["not_after"]).strftime("%d/%m/%Y") if t.get("not_after") else "chưa có chứng thư"
        rows.append([p(i, st.cell), p(", ".join(filter(None, [t.get("serial_number"), t.get("kind")])), st.cell),
                     p("; ".join(filter(None, [t.get("holder_name"), t.get("issuer_name")])) or "chưa có chứng thư", st.cell),
                     p(until, st.cell)])
    table = Table(rows, colWidths=[15 * mm, 45 * mm, 75 * mm, 30 * mm])  # STT as wide as in the profile table
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    note = ("Bên B giữ USB token và mã PIN theo quy định; không giao cho người khác sử dụng; báo ngay cho Trung tâm "
            "Tin học khi mất để đề nghị thu hồi chứng thư số." if handover else
            "USB token được hoàn trả cùng thiết bị.")
    return [p(head, st.bold), table, Spacer(1, 2 * mm), p(note), Spacer(1, 4 * mm)]
