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
import functools
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
    return _parse_version(value)


@functools.lru_cache(maxsize=1024)  # a fleet runs a handful of versions; each run compares 10,000 of them
def _parse_version(value: str) -> tuple[int, int, int] | None:
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


_KEY_RE = re.compile(r"^[a-z][a-z0-9-]{1,39}$")


def _key_list(path: str, value: Any) -> list[str]:
    """VPN provider keys (wireguard, ikev2, or a defined provider's key)."""
    if not isinstance(value, list) or not value:
        raise PolicyInputError(f"{path} must be a non-empty list of VPN provider keys",
                               f"{_vi(path)}: cần ít nhất một nhà cung cấp mạng riêng ảo (VPN).")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _KEY_RE.match(item):
            raise PolicyInputError(f"{path}[{i}] must be a VPN provider key like wireguard, got {item!r}",
                                   f"{_vi(f'{path}[{i}]')}: “{item}” không phải mã nhà cung cấp VPN hợp lệ "
                                   f"(chữ thường, chữ số và dấu gạch ngang, như trong danh sách nhà cung cấp).")
    return list(dict.fromkeys(value))


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
    RuleSpec("vpn_provider_in", {"providers": _key_list}, ("providers",), needs="profile_list"),
    RuleSpec("vpn_seen_within_hours", {"hours": _int_param(1, 24 * 365)}, ("hours",), needs="profile_list"),
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
            elif kind in ("last_checkin_within_hours", "vpn_seen_within_hours"):
                cur.params["hours"] = min(cur.params["hours"], params["hours"])
            elif kind == "vpn_provider_in":  # strictest: only providers every policy allows
                cur.params["providers"] = [k for k in cur.params["providers"] if k in params["providers"]]
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
    # vpn.compliance_facts: {"providers": installed provider keys, "seen": {key: last tunnel sighting}}.
    vpn: dict | None = None


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




# Policy actions are validated and merged in compliance.action_specs.
