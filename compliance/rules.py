"""Compliance rules: validation of policy input, merging into the strictest union,
and evaluation against a device's stored inventory.

A rule is a JSON object {"kind": ..., <parameters>, "immediate": optional bool}:

  min_os_version             {"version": "17.0"}
  max_os_version             {"version": "18.9"}
  passcode_present           {}
  passcode_compliant         {}
  hardware_encryption        {}          block- and file-level data protection (caps & 3 == 3)
  supervised                 {}
  required_profiles          {"identifiers": ["vn.gov.vpcp.vpn", ...]}
  identity_certificate_valid {"not_expiring_within_days": 14}     (default 0)
  last_checkin_within_hours  {"hours": 72}
  not_in_lost_mode           {}
  mdm_profile_present        {}          an installed profile whose identifier ends in ".enroll"
  disallowed_apps            {"bundle_ids": ["com.example.game", ...]}
  app_installed              {"bundle_ids": ["vn.gov.vpcp.vanban"]}   the office's apps are installed
  app_min_version            {"bundle_ids": ["vn.gov.vpcp.vanban"]}   ... at least at the accepted release
                                         (the newest release whose acceptance was recorded, apps package)
  os_update_deadline         {}          iPadOS at the target of the softwareupdate.enforcement.specific
                                         declaration assigned to the device, once its deadline passed
  declarations_active        {}          no declaration the device holds is reported invalid
                                         (status item management.declarations)

Passcode and OS version are read from whichever is newer: the inventory answer (SecurityInfo,
DeviceInformation) or the declarative status report (passcode.is-present / is-compliant,
device.operating-system.version), so a status report changes the verdict at once.

Some failures skip the grace period ("immediate"): the device identity certificate
is revoked or expired, the device is in Lost Mode, the MDM enrollment profile was
removed, the device stopped checking in (the N hours of the rule already are the
tolerance). Any rule may force this with "immediate": true (or relax it with false).

Evaluation is pure: it reads a `DeviceFacts` snapshot and returns failures and
"unknown" results (inventory the rule needs has not been reported yet).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ipad_mdm.refusal import Refusal


class PolicyInputError(Refusal):
    """Invalid policy input; the message names the offending field (English, and Vietnamese for people
    reading the console in Vietnamese)."""


def vn_int(n: int) -> str:
    """1.234 (Vietnamese thousands separator)."""
    return f"{n:,}".replace(",", ".")


def _param_vi(name: str) -> str:
    from .labels import PARAM_LABELS

    return PARAM_LABELS.get(name, (name,))[0]


def _vi(path: str) -> str:
    from .labels import vi_path

    return vi_path(path)


# ------------------------------------------------------------------ versions
_VERSION_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){0,2}$")


def parse_version(value: str | None) -> tuple[int, int, int] | None:
    """'17' -> (17, 0, 0); '17.4.1' -> (17, 4, 1); tolerate suffixes like '18.1 (22B83)'."""
    if not isinstance(value, str):
        return None
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", value)
    if not m:
        return None
    return tuple(int(p) if p is not None else 0 for p in m.groups())  # type: ignore[return-value]


# ------------------------------------------------------------------ rule specs
@dataclass(frozen=True)
class RuleSpec:
    kind: str
    params: dict[str, Callable[[str, Any], Any]]  # name -> validator(path, value) -> normalised value
    required: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    # Which stored inventory the rule needs ("os_version", "security_info", ...).
    needs: str | None = None
    # Failures skip grace unless the rule says "immediate": false.
    immediate: bool = False


def _version_param(path: str, value: Any) -> str:
    if not isinstance(value, str) or not _VERSION_RE.match(value.strip()):
        raise PolicyInputError(f"{path} must be a version like 17.0 or 17.4.1, got {value!r}",
                               f"{_vi(path)}: cần một phiên bản dạng 17.0 hoặc 17.4.1, không phải “{value}”.")
    return value.strip()


def _int_param(lo: int, hi: int):
    def check(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise PolicyInputError(f"{path} must be an integer between {lo} and {hi}, got {value!r}",
                                   f"{_vi(path)}: cần một số nguyên từ {lo} đến {vn_int(hi)}, không phải “{value}”.")
        return value

    return check


_IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")


def _ident_list(what: str):
    def check(path: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not value:
            raise PolicyInputError(f"{path} must be a non-empty list of {what}",
                                   f"{_vi(path)}: cần ít nhất một giá trị.")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not _IDENT_RE.match(item):
                raise PolicyInputError(f"{path}[{i}] must be a {what[:-1]} like com.example.app, got {item!r}",
                                       f"{_vi(f'{path}[{i}]')}: “{item}” không phải định danh hợp lệ (dạng "
                                       f"vn.gov.vpcp.vanban).")
            if item not in out:
                out.append(item)
        return out

    return check


RULE_SPECS: dict[str, RuleSpec] = {s.kind: s for s in (
    RuleSpec("min_os_version", {"version": _version_param}, ("version",), needs="os_version"),
    RuleSpec("max_os_version", {"version": _version_param}, ("version",), needs="os_version"),
    RuleSpec("passcode_present", {}, needs="security_info"),
    RuleSpec("passcode_compliant", {}, needs="security_info"),
    RuleSpec("hardware_encryption", {}, needs="security_info"),
    RuleSpec("supervised", {}, needs="device_information"),
    RuleSpec("required_profiles", {"identifiers": _ident_list("profile identifiers")}, ("identifiers",), needs="profile_list"),
    RuleSpec("identity_certificate_valid", {"not_expiring_within_days": _int_param(0, 3650)},
             defaults={"not_expiring_within_days": 0}, immediate=True),
    RuleSpec("last_checkin_within_hours", {"hours": _int_param(1, 24 * 365)}, ("hours",), immediate=True),
    RuleSpec("not_in_lost_mode", {}, immediate=True),
    RuleSpec("mdm_profile_present", {}, needs="profile_list", immediate=True),
    RuleSpec("disallowed_apps", {"bundle_ids": _ident_list("bundle ids")}, ("bundle_ids",), needs="installed_applications"),
    RuleSpec("app_installed", {"bundle_ids": _ident_list("bundle ids")}, ("bundle_ids",), needs="installed_applications"),
    RuleSpec("app_min_version", {"bundle_ids": _ident_list("bundle ids")}, ("bundle_ids",),
             needs="installed_applications"),
    RuleSpec("os_update_deadline", {}),
    RuleSpec("declarations_active", {}),
)}
RULE_KINDS = tuple(RULE_SPECS)


def validate_rules(value: Any) -> list[dict]:
    """Validate and normalise the `rules` of a policy; raises PolicyInputError."""
    if not isinstance(value, list) or not value:
        raise PolicyInputError("rules must be a non-empty list of rule objects",
                               "Chính sách cần ít nhất một quy tắc.")
    out = []
    for i, raw in enumerate(value):
        path = f"rules[{i}]"
        if not isinstance(raw, dict):
            raise PolicyInputError(f"{path} must be an object with a 'kind'",
                                   f"{_vi(path)}: cần một đối tượng có “kind” (loại quy tắc).")
        kind = raw.get("kind")
        spec = RULE_SPECS.get(kind) if isinstance(kind, str) else None
        if spec is None:
            raise PolicyInputError(f"{path}.kind: unknown rule kind {kind!r}; allowed: {', '.join(RULE_KINDS)}",
                                   f"{_vi(path)}: không có loại quy tắc “{kind}”.")
        path = f"rules[{i}] ({kind})"
        unknown = set(raw) - set(spec.params) - {"kind", "immediate"}
        if unknown:
            allowed = ", ".join(sorted(spec.params)) or "no parameters"
            raise PolicyInputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {allowed}",
                                   f"{_vi(path)}: không có tham số {', '.join(sorted(unknown))}.")
        missing = [p for p in spec.required if p not in raw]
        if missing:
            raise PolicyInputError(f"{path}: missing required key(s) {', '.join(missing)}",
                                   f"{_vi(path)}: vui lòng nhập " + ", ".join(_param_vi(m) for m in missing) + ".")
        rule: dict[str, Any] = {"kind": kind}
        for name, check in spec.params.items():
            if name in raw:
                rule[name] = check(f"{path}.{name}", raw[name])
            elif name in spec.defaults:
                rule[name] = spec.defaults[name]
        if "immediate" in raw:
            if not isinstance(raw["immediate"], bool):
                raise PolicyInputError(f"{path}.immediate must be true or false",
                                       f"{_vi(path)}: “áp dụng ngay” phải là có hoặc không.")
            rule["immediate"] = raw["immediate"]
        out.append(rule)
    mins = [r for r in out if r["kind"] == "min_os_version"]
    maxs = [r for r in out if r["kind"] == "max_os_version"]
    if mins and maxs and parse_version(max(m["version"] for m in mins)) > parse_version(min(m["version"] for m in maxs)):
        raise PolicyInputError("rules: min_os_version is above max_os_version; no device could comply",
                               "Phiên bản hệ điều hành tối thiểu cao hơn phiên bản tối đa: không thiết bị nào tuân thủ được.")
    return out


# ------------------------------------------------------------------ union
@dataclass
class MergedRule:
    """One rule of the effective (strictest-union) policy and the policies that asked for it."""

    kind: str
    params: dict
    immediate: bool | None  # None = the kind's default
    sources: list[dict]  # [{"policy_id", "version"}]


def merge_rules(policies: list[tuple[dict, list[dict]]]) -> list[MergedRule]:
    """Strictest union: same-kind rules collapse to their strictest parameters.

    `policies` is [(source {"policy_id","version"}, rules)]. min_os takes the highest
    version, max_os the lowest, last check-in the fewest hours, certificate expiry the
    most days; identifier lists are united.
    """
    merged: dict[str, MergedRule] = {}
    for source, rules in policies:
        for rule in rules:
            kind = rule["kind"]
            params = {k: v for k, v in rule.items() if k not in ("kind", "immediate")}
            cur = merged.get(kind)
            if cur is None:
                merged[kind] = MergedRule(kind, dict(params), rule.get("immediate"), [source])
                continue
            cur.sources.append(source)
            if rule.get("immediate") is not None:
                # Strictest: any policy asking for immediate wins; "false" only relaxes if nobody insists.
                cur.immediate = bool(cur.immediate) or rule["immediate"]
            if kind == "min_os_version":
                if parse_version(params["version"]) > parse_version(cur.params["version"]):
                    cur.params["version"] = params["version"]
            elif kind == "max_os_version":
                if parse_version(params["version"]) < parse_version(cur.params["version"]):
                    cur.params["version"] = params["version"]
            elif kind == "last_checkin_within_hours":
                cur.params["hours"] = min(cur.params["hours"], params["hours"])
            elif kind == "identity_certificate_valid":
                cur.params["not_expiring_within_days"] = max(cur.params["not_expiring_within_days"],
                                                             params["not_expiring_within_days"])
            elif kind in ("required_profiles", "disallowed_apps", "app_installed", "app_min_version"):
                key = "identifiers" if kind == "required_profiles" else "bundle_ids"
                cur.params[key] = cur.params[key] + [x for x in params[key] if x not in cur.params[key]]
    return [merged[k] for k in RULE_KINDS if k in merged]


# ------------------------------------------------------------------ evaluation
@dataclass
class CertFacts:
    not_after: dt.datetime
    revoked_at: dt.datetime | None


@dataclass
class DeviceFacts:
    """What the evaluation may look at; inventory older than the current enrollment is None."""

    os_version: str | None
    security_info: dict | None
    device_information: dict | None
    is_supervised: bool | None
    profile_list: list | None
    installed_applications: list | None
    lost_mode_enabled: bool
    last_seen_at: dt.datetime | None
    identity: CertFacts | None  # the most recently issued identity certificate
    enrollment_state: str = "enrolled"
    # Passcode from the newer of SecurityInfo and the status report (None = not reported).
    passcode_present: bool | None = None
    passcode_compliant: bool | None = None
    # Declarative management (declarative.DeclarativeFacts): the enforced OS update and the
    # declarations the device reports invalid.
    enforcement: Any = None
    failed_declarations: list = field(default_factory=list)
    # bundle id -> the accepted release's version (apps package), for app_min_version.
    accepted_versions: dict = field(default_factory=dict)


@dataclass
class Failure:
    kind: str
    immediate: bool
    reason_vi: str
    reason_en: str
    params: dict
    sources: list[dict]

    def as_dict(self) -> dict:
        return {"rule": self.kind, "params": self.params, "immediate": self.immediate,
                "reason_vi": self.reason_vi, "reason_en": self.reason_en, "policies": self.sources}


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


def _check(rule: MergedRule, f: DeviceFacts, now: dt.datetime) -> tuple[bool, str, str] | None:
    """None = passes; (immediate, vi, en) = fails. Raises _Unknown when data is missing."""
    k, p = rule.kind, rule.params
    if k in ("min_os_version", "max_os_version"):
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
    if k == "passcode_present":
        if f.passcode_present is None:
            raise _Unknown("security_info")
        if f.passcode_present is not True:
            return False, ("Thiết bị chưa đặt mật mã mở khoá", "No passcode is set on the device")
        return None
    if k == "passcode_compliant":
        if f.passcode_compliant is None:
            raise _Unknown("security_info")
        if f.passcode_compliant is not True:
            return False, ("Mật mã mở khoá không đáp ứng yêu cầu chính sách",
                           "The passcode does not meet the policy requirements")
        return None
    if k == "os_update_deadline":
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
    if k == "declarations_active":
        if f.failed_declarations:
            names = ", ".join(sorted(d["identifier"] for d in f.failed_declarations)[:5])

            def why(key):
                texts = list(dict.fromkeys(t for d in f.failed_declarations for t in d.get(key, [])))[:3]
                return f" ({'; '.join(texts)})" if texts else ""
            return False, (f"Thiết bị báo khai báo cấu hình không áp dụng được: {names}{why('reasons_vi')}",
                           f"The device reports declaration(s) that could not be applied: {names}{why('reasons_en')}")
        return None
    if k == "hardware_encryption":
        si = f.security_info
        if not isinstance(si, dict):
            raise _Unknown("security_info")
        caps = si.get("HardwareEncryptionCaps")
        if not isinstance(caps, int) or caps & 3 != 3:
            return False, (f"Mã hoá phần cứng chưa đầy đủ (HardwareEncryptionCaps={caps})",
                           f"Hardware encryption is incomplete (HardwareEncryptionCaps={caps})")
        return None
    if k == "supervised":
        if f.is_supervised is None:
            raise _Unknown("device_information")
        if not f.is_supervised:
            return False, ("Thiết bị không ở chế độ giám sát (supervised)", "The device is not supervised")
        return None
    if k in ("required_profiles", "mdm_profile_present"):
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
    if k in ("app_installed", "app_min_version"):
        if not isinstance(f.installed_applications, list):
            raise _Unknown("installed_applications")
        have = {a.get("Identifier"): str(a.get("ShortVersion") or a.get("Version") or "")
                for a in f.installed_applications if isinstance(a, dict)}
        missing = [b for b in p["bundle_ids"] if b not in have]
        if missing:
            return False, (f"Chưa cài ứng dụng bắt buộc: {', '.join(missing)}",
                           f"Required app(s) not installed: {', '.join(missing)}")
        if k == "app_min_version":
            behind = [(b, have[b], f.accepted_versions[b]) for b in p["bundle_ids"]
                      if f.accepted_versions.get(b) and parse_version(have[b] or "0") < parse_version(f.accepted_versions[b])]
            if behind:
                vi = "; ".join(f"{b} {v} (phiên bản đã nghiệm thu: {a})" for b, v, a in behind)
                en = "; ".join(f"{b} {v} (accepted version: {a})" for b, v, a in behind)
                return False, (f"Ứng dụng chưa lên phiên bản đã nghiệm thu: {vi}", f"App(s) below the accepted version: {en}")
        return None
    if k == "disallowed_apps":
        if not isinstance(f.installed_applications, list):
            raise _Unknown("installed_applications")
        installed = {a.get("Identifier") for a in f.installed_applications if isinstance(a, dict)}
        found = [b for b in p["bundle_ids"] if b in installed]
        if found:
            return False, (f"Có ứng dụng bị cấm: {', '.join(found)}", f"Disallowed app(s) installed: {', '.join(found)}")
        return None
    if k == "not_in_lost_mode":
        if f.lost_mode_enabled:
            return True, ("Thiết bị đang ở Chế độ mất (Lost Mode)", "The device is in Lost Mode")
        return None
    if k == "last_checkin_within_hours":
        hours = p["hours"]
        if f.last_seen_at is None:
            return True, ("Thiết bị chưa từng kết nối với máy chủ MDM", "The device has never checked in")
        if now - f.last_seen_at > dt.timedelta(hours=hours):
            return True, (f"Thiết bị không kết nối quá {hours} giờ (lần cuối {_fmt_dt(f.last_seen_at)})",
                          f"No check-in for more than {hours} hours (last {_fmt_dt(f.last_seen_at)})")
        return None
    if k == "identity_certificate_valid":
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
    raise AssertionError(f"unhandled rule kind {k}")  # pragma: no cover - RULE_SPECS is closed


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
            result = _check(rule, facts, now)
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


# Policy actions are validated and merged in compliance.action_specs.
