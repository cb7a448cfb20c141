"""Texts shown to leaders (Vietnamese by default, English with ?lang=en) and stored in the audit.

Each reason: (what happened, what to do). Reason texts are what the leader reads on the iPad,
so they say plainly what to fix and whom to call.
"""
from __future__ import annotations

IT_CONTACT_VI = "Trung tâm Tin học, Văn phòng Chính phủ"
IT_CONTACT_EN = "the IT Center of the Government Office"

# code: (reason_vi, fix_vi, reason_en, fix_en)
REASONS: dict[str, tuple[str, str, str, str]] = {
    "allowed": ("Được phép truy cập.", "", "Access allowed.", ""),
    "allowed_grace": (
        "Được phép truy cập tạm thời: thiết bị đang trong thời hạn khắc phục vi phạm chính sách bảo mật.",
        "Vui lòng khắc phục trước thời hạn, nếu không quyền truy cập tài liệu sẽ bị chặn.",
        "Temporary access: the device is in its grace period to fix a security-policy violation.",
        "Please fix it before the deadline, or access to documents will be blocked."),
    "no_client_certificate": (
        "Thiết bị không xuất trình chứng thư định danh.",
        f"Vui lòng mở tài liệu trên iPad đã được đăng ký quản lý (MDM). Nếu iPad đã đăng ký, liên hệ {IT_CONTACT_VI}.",
        "The device presented no identity certificate.",
        f"Open documents on an iPad enrolled in device management (MDM). If it is enrolled, contact {IT_CONTACT_EN}."),
    "untrusted_proxy": (
        "Yêu cầu đi qua một máy chủ trung gian không được tin cậy.",
        f"Vui lòng kết nối qua mạng riêng ảo (VPN) của cơ quan; nếu vẫn lỗi, liên hệ {IT_CONTACT_VI}.",
        "The request came through an untrusted proxy.",
        f"Connect through the office VPN; if it persists, contact {IT_CONTACT_EN}."),
    "certificate_invalid": (
        "Chứng thư định danh của thiết bị không đọc được.",
        f"Liên hệ {IT_CONTACT_VI} để đăng ký lại thiết bị.",
        "The device's identity certificate cannot be read.",
        f"Contact {IT_CONTACT_EN} to re-enroll the device."),
    "certificate_untrusted": (
        "Chứng thư định danh không do hệ thống quản lý thiết bị của Văn phòng Chính phủ cấp.",
        f"Chỉ iPad được cơ quan cấp và đăng ký quản lý mới được đọc tài liệu. Liên hệ {IT_CONTACT_VI}.",
        "The identity certificate was not issued by the office's device management.",
        f"Only iPads issued and enrolled by the office may read documents. Contact {IT_CONTACT_EN}."),
    "certificate_expired": (
        "Chứng thư định danh của thiết bị đã hết hạn.",
        f"Kết nối iPad với mạng để hệ thống tự gia hạn, hoặc liên hệ {IT_CONTACT_VI}.",
        "The device's identity certificate has expired.",
        f"Connect the iPad to the network so it renews, or contact {IT_CONTACT_EN}."),
    "certificate_not_yet_valid": (
        "Chứng thư định danh của thiết bị chưa đến thời điểm có hiệu lực (đồng hồ của máy chủ hoặc thiết bị bị sai).",
        f"Vui lòng kiểm tra ngày giờ trên iPad (Cài đặt > Cài đặt chung > Ngày & Giờ: Đặt tự động) và thử lại; nếu vẫn lỗi, liên hệ {IT_CONTACT_VI}.",
        "The device's identity certificate is not valid yet (the server's or the device's clock is wrong).",
        f"Check the iPad's date and time (Settings > General > Date & Time: Set Automatically) and retry; if it persists, contact {IT_CONTACT_EN}."),
    "certificate_unknown": (
        "Chứng thư không phải chứng thư định danh thiết bị đã đăng ký.",
        f"Liên hệ {IT_CONTACT_VI}.",
        "The certificate is not an enrolled device identity.", f"Contact {IT_CONTACT_EN}."),
    "certificate_revoked": (
        "Chứng thư định danh của thiết bị đã bị thu hồi.",
        f"Thiết bị cần được đăng ký lại. Liên hệ {IT_CONTACT_VI}.",
        "The device's identity certificate has been revoked.",
        f"The device must be enrolled again. Contact {IT_CONTACT_EN}."),
    "certificate_unbound": (
        "Thiết bị chưa hoàn tất đăng ký quản lý.",
        "Vui lòng chờ vài phút để iPad hoàn tất đăng ký rồi thử lại.",
        "The device has not finished enrolling.", "Wait a few minutes for the iPad to finish enrolling, then retry."),
    "device_retired": (
        "Thiết bị đã bị loại bỏ khỏi hệ thống quản lý.",
        f"Thiết bị này không còn được dùng để đọc tài liệu. Liên hệ {IT_CONTACT_VI}.",
        "The device has been retired from management.",
        f"This device can no longer read documents. Contact {IT_CONTACT_EN}."),
    "device_checked_out": (
        "Hồ sơ quản lý thiết bị (MDM) đã bị gỡ khỏi iPad.",
        f"Liên hệ {IT_CONTACT_VI} để cài đặt lại hồ sơ quản lý.",
        "The device management (MDM) profile was removed from the iPad.",
        f"Contact {IT_CONTACT_EN} to install the management profile again."),
    "device_not_enrolled": (
        "Thiết bị chưa hoàn tất đăng ký quản lý.",
        "Vui lòng chờ vài phút để iPad hoàn tất đăng ký rồi thử lại.",
        "The device has not finished enrolling.", "Wait a few minutes for the iPad to finish enrolling, then retry."),
    "lost_mode": (
        "Thiết bị đang ở Chế độ mất (Lost Mode).",
        f"Liên hệ {IT_CONTACT_VI} để xác minh và mở khoá thiết bị.",
        "The device is in Lost Mode.", f"Contact {IT_CONTACT_EN} to verify and unlock the device."),
    "not_assigned": (
        "Thiết bị chưa được bàn giao cho lãnh đạo nào.",
        f"Liên hệ {IT_CONTACT_VI} để hoàn tất thủ tục bàn giao thiết bị.",
        "The device is not assigned to a leader.", f"Contact {IT_CONTACT_EN} to complete the device handover."),
    "leader_inactive": (
        "Tài khoản lãnh đạo gắn với thiết bị không còn hiệu lực.",
        f"Liên hệ {IT_CONTACT_VI}.",
        "The leader this device is assigned to is no longer active.", f"Contact {IT_CONTACT_EN}."),
    "verdict_unknown": (
        "Chưa xác định được tình trạng tuân thủ chính sách bảo mật của thiết bị.",
        "Vui lòng kết nối iPad với mạng (Wi-Fi hoặc 4G) và mở khoá màn hình vài phút để thiết bị gửi thông tin kiểm tra, rồi thử lại.",
        "The device's compliance with the security policy is not known yet.",
        "Connect the iPad to the network and keep it unlocked for a few minutes so it reports its state, then retry."),
    "verdict_non_compliant": (
        "Thiết bị không tuân thủ chính sách bảo mật.",
        "Đề nghị khắc phục các vấn đề dưới đây; quyền truy cập được mở lại ngay khi thiết bị tuân thủ.",
        "The device does not comply with the security policy.",
        "Fix the problems below; access returns as soon as the device complies."),
    "verdict_blocked": (
        "Thiết bị bị chặn do không tuân thủ chính sách bảo mật quá thời hạn cho phép.",
        f"Đề nghị khắc phục các vấn đề dưới đây và liên hệ {IT_CONTACT_VI}.",
        "The device is blocked: it stayed non-compliant past the allowed time.",
        f"Fix the problems below and contact {IT_CONTACT_EN}."),
    "grace_expired": (
        "Thời hạn khắc phục vi phạm chính sách bảo mật đã hết.",
        "Đề nghị khắc phục các vấn đề dưới đây; quyền truy cập được mở lại ngay khi thiết bị tuân thủ.",
        "The grace period to fix the security-policy violation has ended.",
        "Fix the problems below; access returns as soon as the device complies."),
    "document_unknown": (
        "Không tìm thấy tài liệu.", "Vui lòng mở tài liệu từ danh sách.",
        "Document not found.", "Open documents from the list."),
    "document_not_visible": (
        "Không tìm thấy tài liệu.", "Vui lòng mở tài liệu từ danh sách.",
        "Document not found.", "Open documents from the list."),
    "classification_secret": (
        "Không tìm thấy tài liệu.", "Vui lòng mở tài liệu từ danh sách.",
        "Document not found.", "Open documents from the list."),
    "classification_not_allowed": (
        "Không tìm thấy tài liệu.", "Vui lòng mở tài liệu từ danh sách.",
        "Document not found.", "Open documents from the list."),
    "audit_unavailable": (
        "Tạm dừng cung cấp tài liệu: nhật ký truy cập tài liệu đang có lỗi toàn vẹn, không thể ghi nhận lượt truy cập.",
        "Cán bộ phụ trách an toàn thông tin đã được thông báo. Vui lòng thử lại sau hoặc liên hệ "
        f"{IT_CONTACT_VI}.",
        "Documents are withheld: the document access log has an integrity fault and cannot record this access.",
        f"The security officers have been alerted. Please retry later or contact {IT_CONTACT_EN}."),
    "verdict_unassessed": (
        "Thiết bị chưa được áp dụng chính sách bảo mật nào nên chưa thể đánh giá tuân thủ.",
        f"Đề nghị {IT_CONTACT_VI} gán chính sách bảo mật cho đơn vị của thiết bị.",
        "No security policy applies to this device, so its compliance cannot be assessed.",
        f"Ask {IT_CONTACT_EN} to assign a security policy to the device's unit."),
    "internal_error": (
        "Hệ thống tạm thời gặp sự cố.", f"Vui lòng thử lại sau ít phút hoặc liên hệ {IT_CONTACT_VI}.",
        "The system has a temporary problem.", f"Please retry in a few minutes or contact {IT_CONTACT_EN}."),
}

# What the audit stores for the four "not found" codes: the true reason, for security officers.
AUDIT_DETAIL_EN = {
    "document_unknown": "no document with this id",
    "document_not_visible": "document exists but is not visible to this leader's unit/role (or withdrawn)",
    "classification_secret": "secret document: never served to a mobile device",
    "classification_not_allowed": "classification not allowed for this leader's role",
}
AUDIT_DETAIL_VI = {
    "document_unknown": "không có tài liệu với mã này",
    "document_not_visible": "tài liệu tồn tại nhưng đơn vị/chức vụ của lãnh đạo không được xem (hoặc đã rút lại)",
    "classification_secret": "tài liệu mật: không bao giờ được phục vụ trên thiết bị di động",
    "classification_not_allowed": "mức độ mật vượt quá quyền của chức vụ lãnh đạo",
}

UI = {
    "vi": {
        "html_lang": "vi", "title": "Tài liệu của lãnh đạo", "office": "Văn phòng Chính phủ",
        "switch": "English", "switch_lang": "en", "col_title": "Tài liệu", "col_class": "Mức độ",
        "col_sig": "Chữ ký số", "col_date": "Ngày tải lên", "col_size": "Dung lượng", "empty": "Chưa có tài liệu nào.",
        "denied_title": "Không thể truy cập tài liệu", "what_to_do": "Cần làm gì", "problems": "Các vấn đề cần khắc phục",
        "grace_banner": "Cảnh báo: thiết bị đang vi phạm chính sách bảo mật. Quyền đọc tài liệu sẽ bị chặn sau {deadline} nếu chưa khắc phục.",
        "not_found_title": "Không tìm thấy tài liệu", "back": "Quay lại danh sách", "leader": "Lãnh đạo",
        "code": "Mã lý do", "signer": "Người ký", "signed_at": "Thời điểm ký",
        "public": "Công khai", "internal": "Nội bộ", "confidential": "Hạn chế", "secret": "Mật",
        "sig_valid": "Hợp lệ", "sig_invalid": "Không hợp lệ", "sig_unsigned": "Không có chữ ký",
    },
    "en": {
        "html_lang": "en", "title": "Leader documents", "office": "Government Office of Viet Nam",
        "switch": "Tiếng Việt", "switch_lang": "vi", "col_title": "Document", "col_class": "Classification",
        "col_sig": "Digital signature", "col_date": "Uploaded", "col_size": "Size", "empty": "No documents yet.",
        "denied_title": "Documents cannot be opened", "what_to_do": "What to do", "problems": "Problems to fix",
        "grace_banner": "Warning: this device violates the security policy. Document access will be blocked after {deadline} unless it is fixed.",
        "not_found_title": "Document not found", "back": "Back to the list", "leader": "Leader",
        "code": "Reason code", "signer": "Signer", "signed_at": "Signed at",
        "public": "Public", "internal": "Internal", "confidential": "Confidential (restricted)", "secret": "Secret (state secret)",
        "sig_valid": "Valid", "sig_invalid": "Invalid", "sig_unsigned": "Not signed",
    },
}


def texts(code: str) -> tuple[str, str, str, str]:
    return REASONS.get(code, REASONS["internal_error"])


# Reasons only the edge gives (the others are the gateway's, i18n.REASONS).
EDGE_REASONS = {
    "request_malformed": (
        "Yêu cầu không hợp lệ.", "Vui lòng mở lại tài liệu từ ứng dụng của cơ quan.",
        "The request is malformed.", "Open the document again from the office's app."),
    "uri_too_long": (
        "Địa chỉ tài liệu quá dài.", "Vui lòng mở lại tài liệu từ ứng dụng của cơ quan.",
        "The document address is too long.", "Open the document again from the office's app."),
    "classification_secret": (
        "Thông tin, tài liệu thuộc bí mật nhà nước không được mở trên thiết bị di động.",
        "Vui lòng đọc tài liệu này theo quy trình quản lý tài liệu mật của cơ quan.",
        "State-secret information and documents are never opened on a mobile device.",
        "Read this document through the office's procedure for secret documents."),
    "classification_not_allowed": (
        "Mức độ mật của tài liệu vượt quá phạm vi được phép theo chức vụ.",
        f"Nếu cần truy cập, vui lòng liên hệ {IT_CONTACT_VI}.",
        "The document's classification is beyond what this role may open on an iPad.",
        f"If access is needed, contact {IT_CONTACT_EN}."),
    "classification_unavailable": (
        "Chưa xác định được mức độ mật của tài liệu nên chưa thể cho phép truy cập.",
        f"Vui lòng thử lại sau ít phút hoặc liên hệ {IT_CONTACT_VI}.",
        "The document's classification cannot be determined, so access is not allowed.",
        f"Please retry in a few minutes or contact {IT_CONTACT_EN}."),
}


def edge_texts(code: str) -> tuple[str, str, str, str]:
    """What a reverse-proxy refusal tells the leader: the edge states the true reason (there is no
    document list to hide things from, the document system's own app shows the page)."""
    return EDGE_REASONS.get(code) or texts(code)


def audit_label(code: str | None, lang: str) -> str:
    """A reason code in words for security officers (console audit page): the true reason."""
    if code in AUDIT_DETAIL_VI:
        return AUDIT_DETAIL_VI[code] if lang == "vi" else AUDIT_DETAIL_EN[code]
    vi, _, en, _ = edge_texts(code or "")
    return (vi if lang == "vi" else en).rstrip(".")
