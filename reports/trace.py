"""Traceability: for each headline figure, its definition, the tables it comes from and the
count it was computed from — the appendix of every report and its own XLSX sheet."""
from __future__ import annotations

import pandas as pd

from . import fmt
from .i18n import KPI, pick

# key: (definition vi, definition en, source tables, basis key or None)
HEADLINES = {
    "compliance_rate": ("Thiết bị-ngày tuân thủ chia cho thiết bị-ngày được đánh giá; mỗi thiết bị-ngày tính theo phần thời gian "
                        "của ngày ở từng trạng thái.",
                        "Compliant device-days divided by device-days assessed; each device-day counts the part of the day "
                        "spent in each state.", "compliance_verdict_transitions", "device_days"),
    "fleet_enrolled": ("Thiết bị đã hoàn tất đăng ký trước cuối kỳ và chưa gỡ quản lý.",
                       "Devices that completed enrollment before the end of the period and had not checked out.",
                       "devices, checkin_events", "fleet_enrolled"),
    "gateway_denied": ("Số lượt truy cập tài liệu bị cổng truy cập từ chối trong kỳ.",
                       "Document accesses the gateway refused in the period.", "gateway_audit_events", "gateway_denied"),
    "gateway_allowed": ("Số lượt truy cập tài liệu được cổng truy cập cho phép trong kỳ.",
                        "Document accesses the gateway allowed in the period.", "gateway_audit_events", "gateway_allowed"),
    "remediation_mean_hours": ("Trung bình thời gian từ khi thiết bị không còn tuân thủ đến khi tuân thủ trở lại, với các lần "
                               "khắc phục kết thúc trong kỳ.",
                               "Mean time from a device leaving compliance to its return, over episodes ending in the period.",
                               "compliance_verdict_transitions", "remediation_episodes"),
    "devices_behind_newest_os": ("Thiết bị mà phiên bản iPadOS báo cáo gần nhất cũ hơn phiên bản mới nhất trong hệ thống.",
                                 "Devices whose last reported iPadOS is older than the newest version in the fleet.",
                                 "commands (DeviceInformation), devices", "fleet_enrolled"),
    "certs_expiring_30d": ("Thiết bị có chứng thư số định danh mới nhất, chưa bị thu hồi, hết hạn trong 30 ngày sau cuối kỳ.",
                           "Devices whose newest non-revoked identity certificate expires within 30 days after the period.",
                           "identity_certificates", "fleet_enrolled"),
    "cert_renewals": ("Chứng thư số định danh cấp trong kỳ cho thiết bị đã có chứng thư.",
                      "Identity certificates issued in the period to a device that already had one.",
                      "identity_certificates", "cert_renewals"),
    "vpn_cuts": ("Số lượt ngắt kết nối mạng riêng ảo (VPN) trong kỳ.", "VPN cuts in the period.", "vpn_events", "vpn_cuts"),
    "vpn_cuts_made": ("Thiết bị chuyển sang không tuân thủ trong kỳ đã bị ngắt VPN.",
                      "Devices turning non-compliant in the period that were cut from the VPN.",
                      "compliance_verdict_transitions, vpn_events", "vpn_cuts_owed"),
    "security_events": ("Sự kiện an toàn thông tin ghi nhận trong kỳ (cố gắng chiếm quyền định danh, can thiệp nhật ký…).",
                        "Information security events recorded in the period (takeover attempts, log tampering…).",
                        "security_events", "security_events"),
    "lost_mode_enabled": ("Lệnh bật Chế độ mất gửi tới thiết bị trong kỳ.", "Lost Mode commands sent in the period.",
                          "commands", "lost_mode_enabled"),
}
BASIS_NAMES = {
    "device_days": ("thiết bị-ngày được đánh giá", "device-days assessed"),
    "fleet_enrolled": ("thiết bị đã đăng ký", "enrolled devices"),
    "gateway_denied": ("bản ghi nhật ký truy cập", "access log rows"),
    "gateway_allowed": ("bản ghi nhật ký truy cập", "access log rows"),
    "remediation_episodes": ("lần khắc phục", "episodes"),
    "cert_renewals": ("chứng thư", "certificates"),
    "vpn_cuts": ("sự kiện VPN", "VPN events"),
    "vpn_cuts_owed": ("thiết bị phải ngắt", "devices owing a cut"),
    "security_events": ("sự kiện", "events"),
    "lost_mode_enabled": ("lệnh", "commands"),
}
RATES = {"compliance_rate"}
EXTRA_KPI = {"vpn_cuts_made": ("Thiết bị không tuân thủ đã bị ngắt VPN", "Non-compliant devices cut from the VPN")}


def trace_table(kpis: dict, lang: str) -> pd.DataFrame:
    rows = []
    for key, (dvi, den, sources, basis) in HEADLINES.items():
        value = kpis.get(key)
        shown = fmt.percent(value, lang) if key in RATES else (
            fmt.hours(value, lang) if key.endswith("_hours") else fmt.number(value, lang))
        base = kpis.get(basis)
        name = EXTRA_KPI[key][0 if lang == "vi" else 1] if key in EXTRA_KPI else pick(KPI, key, lang)
        rows.append({"indicator": name, "value": shown, "definition": dvi if lang == "vi" else den, "sources": sources,
                     "basis": f"{fmt.number(base, lang)} {BASIS_NAMES[basis][0 if lang == 'vi' else 1]}",
                     "basis_count": None if fmt.missing(base) else float(base), "raw_value": value})
    return pd.DataFrame(rows)
