"""Policy actions as data: validation of a policy's `actions` and their union over policies."""
from __future__ import annotations

import re
from typing import Any, Callable

from .rules import PolicyInputError, _vi

# ------------------------------------------------------------------ actions
ACTION_TYPES = ("notify", "cut_vpn", "block_gateway", "lock_device", "lost_mode")
_ACTION_OPTIONS: dict[str, dict[str, Callable[[str, Any], Any]]] = {}


def _str_param(max_len: int):
    def check(path: str, value: Any) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= max_len:
            raise PolicyInputError(f"{path} must be a string of 1-{max_len} characters",
                                   f"{_vi(path)}: cần từ 1 đến {max_len} ký tự.")
        return value

    return check


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _emails(path: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _EMAIL_RE.match(v) for v in value):
        raise PolicyInputError(f"{path} must be a list of e-mail addresses",
                               f"{_vi(path)}: cần các địa chỉ thư điện tử hợp lệ (dạng ten@vpcp.gov.vn).")
    return value


_ACTION_OPTIONS = {
    "notify": {"recipients": _emails},
    "cut_vpn": {},
    "block_gateway": {},
    "lock_device": {"message": _str_param(500), "phone_number": _str_param(32)},
    "lost_mode": {"message": _str_param(500), "phone_number": _str_param(32), "footnote": _str_param(200)},
}


def validate_actions(value: Any) -> list[dict]:
    """Actions: ["notify", {"type": "lost_mode", "phone_number": "024..."}, ...] -> list of objects."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyInputError("actions must be a list", "Các biện pháp xử lý phải là một danh sách.")
    out: list[dict] = []
    for i, raw in enumerate(value):
        path = f"actions[{i}]"
        if isinstance(raw, str):
            raw = {"type": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise PolicyInputError(f"{path} must be an action name or an object with a 'type'",
                                   f"{_vi(path)}: cần tên biện pháp hoặc một đối tượng có “type”.")
        kind = raw["type"]
        if kind not in _ACTION_OPTIONS:
            raise PolicyInputError(f"{path}: unknown action {kind!r}; allowed: {', '.join(ACTION_TYPES)}",
                                   f"{_vi(path)}: không có biện pháp “{kind}”.")
        if any(a["type"] == kind for a in out):
            raise PolicyInputError(f"{path}: action {kind!r} is listed twice",
                                   f"{_vi(path + ' (' + kind + ')')}: biện pháp này đã có trong danh sách.")
        options = _ACTION_OPTIONS[kind]
        unknown = set(raw) - set(options) - {"type"}
        if unknown:
            raise PolicyInputError(f"{path} ({kind}): unknown key(s) {', '.join(sorted(unknown))}",
                                   f"{_vi(path + ' (' + kind + ')')}: không có tham số {', '.join(sorted(unknown))}.")
        action = {"type": kind}
        for name, check in options.items():
            if name in raw:
                action[name] = check(f"{path} ({kind}).{name}", raw[name])
        out.append(action)
    return out


def merge_actions(action_lists: list[list[dict]]) -> dict[str, dict]:
    """Union of actions by type; options merge (recipients united, first message wins)."""
    merged: dict[str, dict] = {}
    for actions in action_lists:
        for a in actions:
            if isinstance(a, str):  # tolerate the shorthand if a row was written without validation
                a = {"type": a}
            cur = merged.setdefault(a["type"], {"type": a["type"]})
            for k, v in a.items():
                if k == "recipients":
                    cur["recipients"] = cur.get("recipients", []) + [r for r in v if r not in cur.get("recipients", [])]
                else:
                    cur.setdefault(k, v)
    return {k: merged[k] for k in ACTION_TYPES if k in merged}
