"""What people read about policies: rule kinds, their parameters and actions in Vietnamese and English,
and the Vietnamese form of a validation path ("rules[0] (min_os_version).version" → "Quy tắc 1 (Phiên bản
hệ điều hành tối thiểu), tham số “phiên bản”"). The console's policy form, the reports and the API's
Vietnamese errors read them here (one owner)."""
from __future__ import annotations

import re

# kind -> (Vietnamese, English, Vietnamese hint, English hint)
RULE_LABELS: dict[str, tuple[str, str, str, str]] = {
    "min_os_version": ("Phiên bản hệ điều hành tối thiểu", "Minimum OS version",
                       "iPadOS thấp hơn phiên bản này là không tuân thủ.", "iPadOS below this version fails."),
    "max_os_version": ("Phiên bản hệ điều hành tối đa", "Maximum OS version",
                       "Dùng khi phiên bản mới chưa được kiểm tra tương thích.", "For versions not yet tested."),
    "passcode_present": ("Có mật mã mở khoá", "Passcode set", "", ""),
    "passcode_compliant": ("Mật mã đạt yêu cầu", "Passcode compliant",
                           "Mật mã đáp ứng hồ sơ cấu hình mật mã đã cài.", "The passcode meets the installed passcode profile."),
    "hardware_encryption": ("Mã hoá phần cứng", "Hardware encryption",
                            "Mã hoá khối và mã hoá tệp đều bật (có mật mã).", "Block- and file-level protection on."),
    "supervised": ("Thiết bị được giám sát", "Supervised",
                   "Chế độ giám sát của Apple (Apple Configurator hoặc đăng ký tự động).", "Apple supervision."),
    "required_profiles": ("Hồ sơ cấu hình bắt buộc", "Required profiles",
                          "Mỗi dòng một định danh hồ sơ.", "One profile identifier per line."),
    "identity_certificate_valid": ("Chứng thư số thiết bị còn hiệu lực", "Valid identity certificate",
                                   "Không tuân thủ khi còn ít hơn số ngày này.", "Fails with fewer days left than this."),
    "last_checkin_within_hours": ("Kết nối định kỳ với máy chủ", "Recent check-in",
                                  "Không tuân thủ khi không liên lạc quá số giờ này.", "Fails when silent for longer."),
    "not_in_lost_mode": ("Không ở Chế độ mất", "Not in Lost Mode", "", ""),
    "mdm_profile_present": ("Hồ sơ quản lý MDM còn cài đặt", "MDM profile installed", "", ""),
    "disallowed_apps": ("Không cài ứng dụng bị cấm", "No disallowed apps",
                        "Mỗi dòng một mã ứng dụng (bundle ID).", "One bundle ID per line."),
    "os_update_deadline": ("Cập nhật iPadOS đúng hạn", "iPadOS updated by the deadline",
                           "Theo yêu cầu cập nhật bắt buộc (khai báo cấu hình) áp dụng cho thiết bị.",
                           "Per the enforced update declaration assigned to the device."),
    "app_installed": ("Cài ứng dụng bắt buộc", "Required apps installed",
                      "Mỗi dòng một mã ứng dụng (bundle ID).", "One bundle ID per line."),
    "app_min_version": ("Ứng dụng ở phiên bản đã nghiệm thu", "Apps at the accepted version",
                        "Mỗi dòng một mã ứng dụng (bundle ID).", "One bundle ID per line."),
    "declarations_active": ("Khai báo cấu hình áp dụng được", "Declarations applied",
                            "Không có khai báo nào thiết bị báo là không hợp lệ.", "No declaration reported invalid."),
    "vpn_provider_in": ("Mạng riêng ảo (VPN) thuộc danh sách cho phép", "VPN provider allowed",
                        "Mỗi dòng một mã nhà cung cấp VPN như trong danh sách nhà cung cấp; mọi VPN trên iPad phải "
                        "thuộc danh sách.",
                        "One VPN provider key per line (e.g. wireguard); every VPN on the iPad must be listed."),
    "vpn_seen_within_hours": ("Kết nối mạng riêng ảo (VPN) gần đây", "VPN tunnel seen recently",
                              "Không tuân thủ khi cổng VPN không ghi nhận kết nối của iPad quá số giờ này.",
                              "Fails when no VPN gateway has seen the iPad's tunnel for longer."),
}

# parameter -> (Vietnamese, English, input kind: version | int | list | text | emails)
PARAM_LABELS: dict[str, tuple[str, str, str]] = {
    "version": ("phiên bản", "version", "version"),
    "hours": ("số giờ", "hours", "int"),
    "not_expiring_within_days": ("số ngày còn hiệu lực tối thiểu", "minimum days left", "int"),
    "identifiers": ("định danh hồ sơ", "profile identifiers", "list"),
    "bundle_ids": ("mã ứng dụng (bundle ID)", "bundle IDs", "list"),
    "providers": ("mã nhà cung cấp mạng riêng ảo (VPN)", "VPN provider keys", "list"),
    "recipients": ("địa chỉ thư điện tử nhận thông báo", "e-mail recipients", "emails"),
    "message": ("nội dung hiển thị trên iPad", "message shown on the iPad", "text"),
    "phone_number": ("số điện thoại liên hệ", "contact phone number", "text"),
    "footnote": ("chú thích", "footnote", "text"),
    "immediate": ("áp dụng ngay (không có thời hạn khắc phục)", "immediate (no remediation period)", "bool"),
}

# action type -> (Vietnamese, English)
ACTION_LABELS: dict[str, tuple[str, str]] = {
    "notify": ("Gửi thư thông báo", "Send a notification"),
    "cut_vpn": ("Ngắt kết nối mạng riêng ảo (VPN)", "Cut the VPN"),
    "block_gateway": ("Chặn truy cập tài liệu", "Block document access"),
    "lock_device": ("Khoá iPad", "Lock the iPad"),
    "lost_mode": ("Bật Chế độ mất", "Enable Lost Mode"),
}

FIELD_LABELS: dict[str, str] = {
    "name": "tên chính sách", "description": "mô tả", "enabled": "trạng thái bật/tắt", "rules": "các quy tắc",
    "actions": "các biện pháp xử lý", "grace_hours": "thời hạn khắc phục (giờ)",
    "escalation_hours": "thời hạn chuyển sang chặn (giờ)", "assign": "phạm vi áp dụng",
    "assign.all": "áp dụng cho toàn cơ quan", "assign.units": "các đơn vị áp dụng",
}

_RULE_PATH = re.compile(r"^rules\[(\d+)\](?: \((\w+)\))?(?:\.(\w+))?(?:\[(\d+)\])?$")
_ACTION_PATH = re.compile(r"^actions\[(\d+)\](?: \((\w+)\))?(?:\.(\w+))?$")


def vi_path(path: str) -> str:
    """The Vietnamese name of a validation path."""
    m = _RULE_PATH.match(path)
    if m:
        index, kind, param, item = m.groups()
        text = f"Quy tắc {int(index) + 1}"
        if kind:
            text += f" ({RULE_LABELS.get(kind, (kind,))[0]})"
        if param:
            text += f", {'loại quy tắc' if param == 'kind' else 'tham số “' + PARAM_LABELS.get(param, (param,))[0] + '”'}"
        if item:
            text += f", dòng {int(item) + 1}"
        return text
    m = _ACTION_PATH.match(path)
    if m:
        index, kind, param = m.groups()
        text = f"Biện pháp {int(index) + 1}"
        if kind:
            text += f" ({ACTION_LABELS.get(kind, (kind,))[0]})"
        if param:
            text += f", tham số “{PARAM_LABELS.get(param, (param,))[0]}”"
        return text
    label = FIELD_LABELS.get(path)
    return label[0].upper() + label[1:] if label else path


def rule_parameters(kind: str) -> tuple[str, ...]:
    """The parameters a rule kind takes, in the order the form shows them."""
    from .rules import RULE_SPECS

    return tuple(RULE_SPECS[kind].params)


def rule_defaults(kind: str) -> dict:
    from .rules import RULE_SPECS

    spec = RULE_SPECS[kind]
    return {"immediate": spec.immediate, **spec.defaults}


def action_options(action_type: str) -> tuple[str, ...]:
    from .action_specs import _ACTION_OPTIONS

    return tuple(_ACTION_OPTIONS[action_type])
