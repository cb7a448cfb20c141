"""Rule evaluation: one device's facts against the merged rules (pure; no storage).

`evaluate_rules` answers, for each rule, pass, fail (with its reason in Vietnamese and English and
whether the failure skips grace) or unknown (the inventory it needs has not arrived).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .rules import DeviceFacts, Failure, MergedRule, parse_version

_INVENTORY_NAMES = {
    "os_version": ("DeviceInformation", "thông tin thiết bị (DeviceInformation)"),
    "security_info": ("SecurityInfo", "thông tin bảo mật (SecurityInfo)"),
    "device_information": ("DeviceInformation", "thông tin thiết bị (DeviceInformation)"),
    "profile_list": ("ProfileList", "danh sách hồ sơ cấu hình (ProfileList)"),
    "installed_applications": ("InstalledApplicationList", "danh sách ứng dụng (InstalledApplicationList)"),
}


def _local(value: dt.datetime) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))


def _fmt_dt(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _os_version(k, p, f, now):
    have = parse_version(f.os_version)
    if have is None:
        raise _Unknown("os_version")
    want = parse_version(p["version"])
    if k == "min_os_version" and have < want:
        return False, (f"Phiên bản iPadOS {f.os_version} thấp hơn mức tối thiểu {p['version']}",
                       f"iPadOS {f.os_version} is below the minimum {p['version']}")
    if k == "max_os_version" and have > want:
        return False, (f"Phiên bản iPadOS {f.os_version} cao hơn mức tối đa được phép {p['version']}",
                       f"iPadOS {f.os_version} is above the maximum allowed {p['version']}")
    return None


_PASSCODE_REASONS = {
    "passcode_present": ("Thiết bị chưa đặt mật mã mở khoá", "No passcode is set on the device"),
    "passcode_compliant": ("Mật mã mở khoá không đáp ứng yêu cầu chính sách",
                           "The passcode does not meet the policy requirements"),
}


def _passcode(k, p, f, now):
    value = getattr(f, k)  # the rule kind names its fact: passcode_present / passcode_compliant
    if value is None:
        raise _Unknown("security_info")
    if value is not True:
        return False, _PASSCODE_REASONS[k]
    return None


def _os_update_deadline(k, p, f, now):
    enf = f.enforcement
    if enf is None or now < enf.deadline:
        return None
    have = parse_version(f.os_version)
    if have is None:
        raise _Unknown("os_version")
    if have < parse_version(enf.target_version):
        local = _local(enf.deadline)
        return False, (f"Chưa cập nhật iPadOS {enf.target_version} (đang dùng {f.os_version}) dù đã quá hạn "
                       f"{local:%H:%M} ngày {local:%d/%m/%Y}",
                       f"iPadOS {f.os_version} not updated to {enf.target_version} although the deadline "
                       f"{local:%d/%m/%Y %H:%M} has passed")
    return None


def _declarations_active(k, p, f, now):
    if f.failed_declarations:
        names = ", ".join(sorted(d["identifier"] for d in f.failed_declarations)[:5])

        def why(key):
            texts = list(dict.fromkeys(t for d in f.failed_declarations for t in d.get(key, [])))[:3]
            return f" ({'; '.join(texts)})" if texts else ""
        return False, (f"Thiết bị báo khai báo cấu hình không áp dụng được: {names}{why('reasons_vi')}",
                       f"The device reports declaration(s) that could not be applied: {names}{why('reasons_en')}")
    return None


def _hardware_encryption(k, p, f, now):
    si = f.security_info
    if not isinstance(si, dict):
        raise _Unknown("security_info")
    caps = si.get("HardwareEncryptionCaps")
    if not isinstance(caps, int) or caps & 3 != 3:
        return False, (f"Mã hoá phần cứng chưa đầy đủ (HardwareEncryptionCaps={caps})",
                       f"Hardware encryption is incomplete (HardwareEncryptionCaps={caps})")
    return None


def _supervised(k, p, f, now):
    if f.is_supervised is None:
        raise _Unknown("device_information")
    if not f.is_supervised:
        return False, ("Thiết bị không ở chế độ giám sát (supervised)", "The device is not supervised")
    return None


def _profiles(k, p, f, now):
    if not isinstance(f.profile_list, list):
        raise _Unknown("profile_list")
    idents = {e.get("PayloadIdentifier") for e in f.profile_list if isinstance(e, dict)}
    if k == "mdm_profile_present":
        if not any(isinstance(i, str) and i.endswith(".enroll") for i in idents):
            return True, ("Hồ sơ đăng ký MDM đã bị gỡ khỏi thiết bị", "The MDM enrollment profile was removed")
        return None
    missing = [i for i in p["identifiers"] if i not in idents]
    if missing:
        return False, (f"Thiếu hồ sơ cấu hình bắt buộc: {', '.join(missing)}",
                       f"Required configuration profile(s) missing: {', '.join(missing)}")
    return None


def _apps_installed(k, p, f, now):
    if not isinstance(f.installed_applications, list):
        raise _Unknown("installed_applications")
    have = {a.get("Identifier"): str(a.get("ShortVersion") or a.get("Version") or "")
            for a in f.installed_applications if isinstance(a, dict)}
    missing = [b for b in p["bundle_ids"] if b not in have]
    if missing:
        return False, (f"Chưa cài ứng dụng bắt buộc: {', '.join(missing)}",
                       f"Required app(s) not installed: {', '.join(missing)}")
    if k == "app_min_version":
        behind = [(b, have[b], f.accepted_versions[b]) for b in p["bundle_ids"] if _behind(have[b], f.accepted_versions.get(b))]
        if behind:
            vi = "; ".join(f"{b} {v} (phiên bản đã nghiệm thu: {a})" for b, v, a in behind)
            en = "; ".join(f"{b} {v} (accepted version: {a})" for b, v, a in behind)
            return False, (f"Ứng dụng chưa lên phiên bản đã nghiệm thu: {vi}", f"App(s) below the accepted version: {en}")
    return None


def _behind(installed: str, accepted: str | None) -> bool:
    """Whether the installed version is below the accepted one. A version the iPad reports that is
    not a version number ("", "beta") cannot be shown to be accepted: behind."""
    want = parse_version(accepted)
    if want is None:
        return False  # no accepted release of the app (or none that is a version number) to hold it to
    have = parse_version(installed)
    return have is None or have < want


def _disallowed_apps(k, p, f, now):
    if not isinstance(f.installed_applications, list):
        raise _Unknown("installed_applications")
    installed = {a.get("Identifier") for a in f.installed_applications if isinstance(a, dict)}
    found = [b for b in p["bundle_ids"] if b in installed]
    if found:
        return False, (f"Có ứng dụng bị cấm: {', '.join(found)}", f"Disallowed app(s) installed: {', '.join(found)}")
    return None


def _not_in_lost_mode(k, p, f, now):
    if f.lost_mode_enabled:
        return True, ("Thiết bị đang ở Chế độ mất (Lost Mode)", "The device is in Lost Mode")
    return None


def _last_checkin(k, p, f, now):
    hours = p["hours"]
    if f.last_seen_at is None:
        return True, ("Thiết bị chưa từng kết nối với máy chủ MDM", "The device has never checked in")
    if now - f.last_seen_at > dt.timedelta(hours=hours):
        return True, (f"Thiết bị không kết nối quá {hours} giờ (lần cuối {_fmt_dt(f.last_seen_at)})",
                      f"No check-in for more than {hours} hours (last {_fmt_dt(f.last_seen_at)})")
    return None


def _identity_certificate(k, p, f, now):
    cert = f.identity
    if cert is None:
        return True, ("Thiết bị không có chứng thư định danh", "The device has no identity certificate")
    if cert.revoked_at is not None:
        return True, ("Chứng thư định danh của thiết bị đã bị thu hồi", "The device identity certificate is revoked")
    if cert.not_after <= now:
        return True, (f"Chứng thư định danh đã hết hạn ngày {_fmt_dt(cert.not_after)}",
                      f"The device identity certificate expired on {_fmt_dt(cert.not_after)}")
    days = p["not_expiring_within_days"]
    if days and cert.not_after - now < dt.timedelta(days=days):
        # Still valid: a renewal problem, not a compromise, so the normal grace applies.
        return False, (f"Chứng thư định danh sắp hết hạn ({_fmt_dt(cert.not_after)}, dưới {days} ngày)",
                       f"The device identity certificate expires within {days} days ({_fmt_dt(cert.not_after)})")
    return None


def _vpn(k, p, f, now):
    if not isinstance(f.profile_list, list) or f.vpn is None:
        raise _Unknown("profile_list")
    installed = sorted(f.vpn.get("providers") or ())
    if k == "vpn_provider_in":
        allowed = p["providers"]
        other = [key for key in installed if key not in allowed]
        if not installed or other or not allowed:
            have_vi = ", ".join(installed) if installed else "không có"
            have_en = ", ".join(installed) if installed else "none"
            return False, (f"Mạng riêng ảo (VPN) trên thiết bị ({have_vi}) không thuộc danh sách cho phép: "
                           f"{', '.join(allowed) or '—'}",
                           f"The VPN on the device ({have_en}) is not among the allowed: {', '.join(allowed) or '-'}")
        return None
    hours = p["hours"]
    seen = [at for key, at in (f.vpn.get("seen") or {}).items() if key in installed and at is not None]
    if not seen:
        return False, ("Chưa ghi nhận kết nối mạng riêng ảo (VPN) nào của thiết bị tại cổng VPN",
                       "No VPN tunnel of the device has been seen at a VPN gateway")
    last = max(seen)
    if now - last > dt.timedelta(hours=hours):
        return False, (f"Không ghi nhận kết nối mạng riêng ảo (VPN) quá {hours} giờ (lần cuối {_fmt_dt(last)})",
                       f"No VPN tunnel seen for more than {hours} hours (last {_fmt_dt(last)})")
    return None


# Each rule kind's check: (kind, params, facts, now) -> None (passes) or (immediate, (vi, en)) (fails);
# raises _Unknown when the inventory it needs has not arrived. One lookup per rule, not a chain of
# comparisons: the scheduled run checks eleven rules on each of thousands of iPads.
_CHECKS = {
    "min_os_version": _os_version, "max_os_version": _os_version, "passcode_present": _passcode,
    "passcode_compliant": _passcode, "os_update_deadline": _os_update_deadline,
    "declarations_active": _declarations_active, "hardware_encryption": _hardware_encryption,
    "supervised": _supervised, "required_profiles": _profiles, "mdm_profile_present": _profiles,
    "app_installed": _apps_installed, "app_min_version": _apps_installed, "disallowed_apps": _disallowed_apps,
    "vpn_provider_in": _vpn, "vpn_seen_within_hours": _vpn, "not_in_lost_mode": _not_in_lost_mode,
    "last_checkin_within_hours": _last_checkin, "identity_certificate_valid": _identity_certificate,
}


class _Unknown(Exception):
    def __init__(self, needs: str):
        self.needs = needs


@dataclass
class RuleOutcome:
    failures: list[Failure]
    unknown: list[Failure]  # reasons for rules that could not be evaluated

    @property
    def immediate(self) -> bool:
        return any(f.immediate for f in self.failures)


def evaluate_rules(rules: list[MergedRule], facts: DeviceFacts, now: dt.datetime) -> RuleOutcome:
    failures: list[Failure] = []
    unknown: list[Failure] = []
    for rule in rules:
        try:
            result = _CHECKS[rule.kind](rule.kind, rule.params, facts, now)
        except _Unknown as exc:
            name_en, name_vi = _INVENTORY_NAMES[exc.needs]
            unknown.append(Failure(rule.kind, False, f"Chưa nhận được {name_vi} từ thiết bị",
                                   f"No {name_en} inventory reported yet", rule.params, rule.sources))
            continue
        if result is None:
            continue
        default_immediate, (vi, en) = result
        if rule.immediate is not None and rule.kind != "identity_certificate_valid":
            immediate = rule.immediate
        elif rule.immediate is not None:
            # A revoked/expired certificate is always immediate; the override only
            # applies to the "expiring soon" warning.
            immediate = default_immediate or rule.immediate
        else:
            immediate = default_immediate
        failures.append(Failure(rule.kind, immediate, vi, en, rule.params, rule.sources))
    return RuleOutcome(failures, unknown)
