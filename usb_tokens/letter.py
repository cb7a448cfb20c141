"""The request to the issuing certification authority to revoke a lost token's certificate (công văn
đề nghị thu hồi chứng thư số), in the Decree 30/2020/NĐ-CP letter layout, rendered from the loss event's
snapshot so a reprint is identical."""
from __future__ import annotations

import io

from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, Paragraph, Spacer, Table
from xml.sax.saxutils import escape

from ipad_mdm.decree30 import ISSUER_FULL, document, header, key_value_table, local, page_number, styles


def revocation_request_pdf(data: dict) -> bytes:
    st = styles()
    p = st.p
    at = local(data.get("at"))
    number = data.get("number")
    authority = data.get("issuer_name") or "Tổ chức cung cấp dịch vụ chứng thực chữ ký số"
    lost_on = data.get("lost_on", "")
    lost_vn = "/".join(reversed(lost_on.split("-"))) if lost_on else ""
    buf = io.BytesIO()
    doc = document(buf, "Đề nghị thu hồi chứng thư số")
    story = [header(st, f"{number}/TTTH-ATTT", at, "V/v đề nghị thu hồi chứng thư số do USB token bị mất"),
             Spacer(1, 8 * mm),
             Paragraph("Kính gửi: " + escape(authority) + ".", st.center),
             Spacer(1, 6 * mm)]
    holder = data.get("holder") or data.get("holder_name") or "(chưa rõ)"
    story += [
        p(f"{ISSUER_FULL} trân trọng thông báo: USB token ký số có số sê-ri {data.get('serial_number', '')} "
          f"cấp cho {holder} đã bị mất ngày {lost_vn}."),
        Spacer(1, 2 * mm),
        p("Hoàn cảnh: " + (data.get("circumstances") or "")),
        Spacer(1, 2 * mm),
        p(f"Để bảo đảm an toàn thông tin, không để chữ ký số bị sử dụng trái phép, đề nghị {authority} thu hồi "
          "ngay chứng thư số sau:"),
        Spacer(1, 3 * mm),
    ]
    until = local(data["not_after"]).strftime("%d/%m/%Y") if data.get("not_after") else ""
    story.append(key_value_table(st, [
        ("Người được cấp", data.get("holder_name") or holder),
        ("Chủ thể chứng thư số", data.get("cert_subject") or ""),
        ("Số hiệu chứng thư số", data.get("cert_serial") or "(chưa có)"),
        ("Tổ chức cấp", data.get("cert_issuer") or authority),
        ("Hiệu lực đến", until),
        ("USB token (số sê-ri, loại)", ", ".join(filter(None, [data.get("serial_number"), data.get("kind")]))),
    ]))
    story += [
        Spacer(1, 4 * mm),
        p(f"Đề nghị {authority} thông báo kết quả thu hồi cho {ISSUER_FULL} để cập nhật danh sách quản lý "
          "thiết bị chữ ký số của cơ quan."),
        p("Trân trọng./."),
        Spacer(1, 6 * mm),
    ]
    small = st.cell
    recipients = [Paragraph("<b><i>Nơi nhận:</i></b>", small), p("- Như trên;", small),
                  p("- Lãnh đạo Văn phòng (để báo cáo);", small), p(f"- {holder} (để biết);", small),
                  p("- Lưu: VT, TTTH.", small)]
    sign = [p("GIÁM ĐỐC", st.center_bold), p("(Ký, ghi rõ họ tên)", st.italic), Spacer(1, 26 * mm)]
    block = Table([[recipients, sign]], colWidths=[75 * mm, 90 * mm])
    block.setStyle([("VALIGN", (0, 0), (-1, -1), "TOP")])
    story.append(KeepTogether([block]))
    doc.build(story, onLaterPages=page_number)
    return buf.getvalue()
