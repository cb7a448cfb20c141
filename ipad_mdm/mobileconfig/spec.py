"""The spec engine: key descriptions, the generic checker, shared formats."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence


class PayloadError(ValueError):
    """A payload or profile breaks Apple's reference or a local rule.

    ``key`` is the dotted path of the offending key (``PayloadContent.Keysize``,
    ``EAPClientConfiguration.AcceptEAPTypes[0]``); the message always names it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


# --------------------------------------------------------------------------
# Spec tables and the generic engine
# --------------------------------------------------------------------------

# Reference type name -> (accepted Python types, phrase used in messages).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "a string"),
    "integer": ((int,), "an integer"),
    "boolean": ((bool,), "a boolean"),
    "data": ((bytes,), "data (bytes)"),
    "array": ((list,), "an array (list)"),
    "dictionary": ((dict,), "a dictionary"),
    "date": ((datetime,), "a date (datetime)"),
    "real": ((float, int), "a real number"),
}


@dataclass(frozen=True)
class Key:
    """Spec of one key, one array item, or the values of a free-form dictionary."""

    name: str
    type: str | tuple[str, ...]
    required: bool = False
    allowed: tuple[Any, ...] = ()  # Apple's ``rangelist``
    min: float | None = None  # Apple's ``range``
    max: float | None = None
    pattern: str | None = None  # Apple's ``format``; must match the whole string
    item: Key | None = None  # element spec of an array
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False
    fields: tuple[Key, ...] | None = None  # known keys of a dictionary
    values: Key | None = None  # spec of every value of a free-form dictionary
    open: bool = False  # dictionary may carry keys we do not know (vendor configs)
    secret: bool = False  # never echo the value in an error message
    check: Callable[[Any], str | None] | None = None  # extra check; returns a message


def _s(name: str, **kw: Any) -> Key:
    return Key(name, "string", **kw)


def _i(name: str, **kw: Any) -> Key:
    return Key(name, "integer", **kw)


def _b(name: str, **kw: Any) -> Key:
    return Key(name, "boolean", **kw)


def _flag(name: str, **kw: Any) -> Key:
    # Apple models many VPN switches as integers restricted to 0/1, not booleans.
    return Key(name, "integer", allowed=(0, 1), **kw)


def _strings(name: str, **kw: Any) -> Key:
    return Key(name, "array", item=_s("item"), **kw)


def _d(name: str, fields: Iterable[Key], **kw: Any) -> Key:
    return Key(name, "dictionary", fields=tuple(fields), **kw)


@dataclass(frozen=True)
class _PayloadSpec:
    payload_type: str
    label: str  # prefix of every error message, e.g. "SCEP"
    keys: tuple[Key, ...]
    rules: tuple[Callable[[str, dict], None], ...] = ()  # cross-key rules
    multiple: bool = True  # Apple's supportedOS.iOS.multiple


def _fail(label: str, path: str, message: str) -> None:
    raise PayloadError(path, f"{label}: {path} {message}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_type(value: Any, type_name: str) -> bool:
    # bool is a subclass of int in Python but a distinct plist type.
    if type_name in ("integer", "real") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[type_name][0])


def _shown(value: Any, key: Key) -> str:
    if key.secret:
        return "<redacted>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_value(label: str, key: Key, value: Any, path: str) -> None:
    types = (key.type,) if isinstance(key.type, str) else key.type
    matched = next((t for t in types if _is_type(value, t)), None)
    if matched is None:
        wanted = " or ".join(_TYPES[t][1] for t in types)
        _fail(label, path, f"must be {wanted} (got {type(value).__name__})")
    if key.allowed and value not in key.allowed:
        choices = ", ".join(str(a) for a in key.allowed)
        _fail(label, path, f"must be one of {choices} (got {_shown(value, key)})")
    if key.min is not None or key.max is not None:
        too_low = key.min is not None and value < key.min
        too_high = key.max is not None and value > key.max
        if too_low or too_high:
            if key.min is not None and key.max is not None:
                bound = f"between {_num(key.min)} and {_num(key.max)}"
            elif key.min is not None:
                bound = f"at least {_num(key.min)}"
            else:
                bound = f"at most {_num(key.max)}"
            _fail(label, path, f"must be {bound} (got {_shown(value, key)})")
    if key.pattern is not None and not re.fullmatch(key.pattern, value):
        _fail(label, path, f"must match the format {key.pattern} (got {_shown(value, key)})")
    if matched == "array":
        _check_array(label, key, value, path)
    elif matched == "dictionary":
        _check_dict(label, key.fields, value, path, values=key.values, open_=key.open)
    if key.check is not None:
        problem = key.check(value)
        if problem:
            _fail(label, path, problem)


def _check_array(label: str, key: Key, value: list, path: str) -> None:
    if len(value) < key.min_items:
        _fail(label, path, f"must have at least {key.min_items} item(s) (got {len(value)})")
    if key.max_items is not None and len(value) > key.max_items:
        _fail(label, path, f"must have at most {key.max_items} item(s) (got {len(value)})")
    if key.unique:
        seen: list[Any] = []
        for element in value:
            if element in seen:
                _fail(label, path, f"must not repeat items (got {_shown(element, key)} twice)")
            seen.append(element)
    if key.item is not None:
        for index, element in enumerate(value):
            _check_value(label, key.item, element, f"{path}[{index}]")


def _check_dict(
    label: str,
    fields: Sequence[Key] | None,
    value: dict,
    path: str,
    *,
    values: Key | None = None,
    open_: bool = False,
    owner: str | None = None,
) -> None:
    known = {k.name: k for k in fields or ()}
    for name in value:
        if not isinstance(name, str):
            _fail(label, path or "payload", f"keys must be strings (got {name!r})")
    for k in fields or ():
        if k.required and k.name not in value:
            _fail(label, _join(path, k.name), "is required")
    for name, element in value.items():
        spec = known.get(name, values)
        if spec is None:
            if open_:
                continue
            # Unknown keys are refused: a typo ("allowCammera") would otherwise
            # be silently ignored by the device and leave a setting unenforced.
            where = owner or path
            _fail(label, _join(path, name), f"is not a known key of {where}")
        _check_value(label, spec, element, _join(path, name))


# --------------------------------------------------------------------------
# Shared formats
# --------------------------------------------------------------------------

# Apple's ``format`` for references to certificate payloads.
_APPLE_UUID = r"^[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}$"
# Local rule: we emit canonical uppercase UUIDs so that profile diffs and the
# database (which stores them as text) never disagree on case.
_UPPER_UUID = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
# Local rule: Apple asks for a "reverse-DNS style" identifier; require at least
# two dot-separated labels and no whitespace.
_REVERSE_DNS = r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+"
_HTTPS_URL = r"^https://.*$"  # Apple's format for the MDM URLs

_COMMON_KEYS: tuple[Key, ...] = (
    _s("PayloadType", required=True),
    _s("PayloadIdentifier", required=True, pattern=_REVERSE_DNS),
    _s("PayloadUUID", required=True, pattern=_UPPER_UUID),
    _i("PayloadVersion", required=True, allowed=(1,)),
    # Apple marks this optional; we require it so staff can tell payloads apart.
    _s("PayloadDisplayName", required=True),
    _s("PayloadDescription"),
    _s("PayloadOrganization"),
)

