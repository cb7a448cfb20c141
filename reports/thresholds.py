"""The thresholds the reports judge against, and how a reader sees them (sentences, not keys).

Environment variables (read by Thresholds.from_env; defaults in brackets):
  IPAD_MDM_REPORT_COMPLIANCE_TARGET_PCT   [95]  overall compliance target (monthly verdict, yearly proposal)
  IPAD_MDM_REPORT_MEASURE_TARGET_PCT      [98]  passcode / encryption / OS / certificate measures: share of
                                                device-days without a failure of that measure
  IPAD_MDM_REPORT_VPN_CUT_TARGET_PCT      [100] share of devices entering non-compliance whose VPN was cut
  IPAD_MDM_REPORT_RULE_SHARE_PCT          [5]   a rule failing in more than this % of device-days
  IPAD_MDM_REPORT_SLOW_REMEDIATION_HOURS  [72]  a unit whose mean time to remediate exceeds this
  IPAD_MDM_REPORT_LATE_RENEWAL_PCT        [10]  share of certificate renewals that were late
  IPAD_MDM_REPORT_LATE_RENEWAL_DAYS       [7]   a renewal issued less than this many days before expiry is late
  IPAD_MDM_REPORT_DENY_REASON_PCT         [20]  one deny reason above this % of all denials …
  IPAD_MDM_REPORT_DENY_REASON_MIN         [20]  … and at least this many denials
  IPAD_MDM_REPORT_VPN_CUTS_PER_100        [10]  VPN cuts per 100 enrolled devices over the year
  IPAD_MDM_REPORT_PATCH_LATENCY_DAYS      [14]  mean OS patch latency over the year
  IPAD_MDM_REPORT_PLAN_MIN_IPADOS         [18]  the minimum iPadOS next year's plan requires
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from . import fmt


@dataclass(frozen=True)
class Thresholds:
    compliance_target_pct: float = 95.0
    measure_target_pct: float = 98.0
    vpn_cut_target_pct: float = 100.0
    rule_share_pct: float = 5.0
    slow_remediation_hours: float = 72.0
    late_renewal_pct: float = 10.0
    late_renewal_days: int = 7
    deny_reason_pct: float = 20.0
    deny_reason_min: int = 20
    vpn_cuts_per_100: float = 10.0
    patch_latency_days: float = 14.0
    plan_min_ipados: int = 18

    @classmethod
    def from_env(cls, env=None) -> Thresholds:
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f"IPAD_MDM_REPORT_{f.name.upper()}")
            if raw not in (None, ""):
                values[f.name] = int(raw) if f.type in ("int", int) else float(raw)
        return cls(**values)


_SENTENCES = {
    "compliance_target_pct": ("Tỷ lệ tuân thủ chung đạt yêu cầu khi từ {v} trở lên.",
                              "Overall compliance meets the target at {v} or more."),
    "measure_target_pct": ("Các biện pháp mật mã mở khoá, mã hoá, phiên bản hệ điều hành và chứng thư số định danh thiết bị "
                           "đạt yêu cầu khi tỷ lệ thiết bị-ngày không vi phạm từ {v} trở lên.",
                           "The passcode, encryption, OS version and device identity certificate measures are met when "
                           "{v} or more of device-days show no failure."),
    "vpn_cut_target_pct": ("Biện pháp ngắt mạng riêng ảo (VPN) đạt yêu cầu khi từ {v} thiết bị không tuân thủ trở lên bị ngắt kết nối.",
                           "The VPN measure is met when {v} or more of devices becoming non-compliant are cut from the VPN."),
    "rule_share_pct": ("Một quy tắc được đề xuất tăng cường khi không đạt trong hơn {v} số thiết bị-ngày.",
                       "A rule is proposed for strengthening when it fails in more than {v} of device-days."),
    "slow_remediation_hours": ("Một đơn vị được đề xuất rút ngắn thời gian khắc phục khi trung bình vượt {v}.",
                               "A unit is proposed for faster remediation when its mean exceeds {v}."),
    "late_renewal_pct": ("Việc gia hạn chứng thư số cần cải thiện khi hơn {v} số lượt gia hạn bị muộn.",
                         "Certificate renewal needs improvement when more than {v} of renewals are late."),
    "late_renewal_days": ("Một lượt gia hạn được coi là muộn khi chứng thư mới được cấp ít hơn {v} trước khi chứng thư cũ hết hạn.",
                          "A renewal is late when the new certificate is issued less than {v} before the old one expires."),
    "deny_reason_pct": ("Một lý do từ chối truy cập tài liệu được đề xuất xử lý khi chiếm hơn {v} tổng số lượt từ chối …",
                        "A document access deny reason is proposed for action when it accounts for more than {v} of all denials …"),
    "deny_reason_min": ("… và có ít nhất {v} lượt từ chối.", "… and at least {v} denials."),
    "vpn_cuts_per_100": ("Số lượt ngắt VPN được coi là cao khi vượt {v} lượt trên 100 thiết bị trong năm.",
                         "VPN cuts are high above {v} per 100 devices over the year."),
    "patch_latency_days": ("Việc cập nhật hệ điều hành được coi là chậm khi độ trễ trung bình vượt {v}.",
                           "OS updates are slow when the mean patch latency exceeds {v}."),
    "plan_min_ipados": ("Kế hoạch năm sau yêu cầu iPadOS tối thiểu phiên bản {v}.",
                        "Next year's plan requires iPadOS {v} or later."),
}


def describe(th: Thresholds, lang: str) -> list[str]:
    """Each threshold as a sentence in the reader's language, with its value formatted."""
    out = []
    for f in fields(th):
        value = getattr(th, f.name)
        if f.name.endswith("_pct"):
            shown = fmt.percent(value / 100, lang, 1)
        elif f.name.endswith("_hours"):
            shown = fmt.hours(value, lang)
        elif f.name.endswith("_days"):
            shown = fmt.days(value, lang)
        else:
            shown = fmt.number(value, lang)
        out.append(_SENTENCES[f.name][0 if lang == "vi" else 1].format(v=shown))
    return out
