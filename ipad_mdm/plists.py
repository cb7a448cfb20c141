"""Safe plist reading and conversion of plist values to JSON-storable data."""
from __future__ import annotations

import base64
import datetime as dt
import logging
import plistlib
from xml.parsers.expat import ExpatError

MAX_DEPTH = 32
log = logging.getLogger(__name__)


class PlistError(ValueError):
    """A body that is not an acceptable property list."""


def loads(data: bytes, *, max_bytes: int = 2 * 1024 * 1024, max_depth: int = MAX_DEPTH) -> dict:
    """Parse an XML or binary plist whose top level is a dictionary.

    plistlib refuses entity declarations (no billion-laughs); we add a size
    and a nesting bound so a hostile body cannot exhaust memory or the stack.
    """
    if not data:
        raise PlistError("empty body")
    if len(data) > max_bytes:
        raise PlistError(f"body larger than {max_bytes} bytes")
    try:
        value = plistlib.loads(data)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        raise PlistError(f"malformed plist: {type(exc).__name__}") from None
    except Exception as exc:  # plistlib's binary reader can raise almost anything on junk
        raise PlistError(f"malformed plist: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise PlistError("top level of the plist must be a dictionary")
    _check_depth(value, max_depth)
    return value


def _check_depth(value, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise PlistError(f"plist nested deeper than {max_depth}")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def dumps(value: dict) -> bytes:
    return plistlib.dumps(value, fmt=plistlib.FMT_XML, sort_keys=True)


# Longest string kept from what a device sends (a DeviceName of 200,000 characters is not a name).
MAX_STRING = 4096


def to_json(value, *, max_string: int = MAX_STRING):
    """Plist value -> JSON value: bytes become base64 strings, dates ISO 8601 UTC; strings
    (and keys) longer than max_string are truncated, with one log line per value converted."""
    clipped = [0]
    out = _to_json(value, max_string, clipped)
    if clipped[0]:
        log.warning("%d string(s) longer than %d characters truncated before storing", clipped[0], max_string)
    return out


def _clip(text: str, max_string: int, clipped: list) -> str:
    if len(text) > max_string:
        clipped[0] += 1
        return text[:max_string]
    return text


def _to_json(value, max_string: int, clipped: list):
    if isinstance(value, dict):
        return {_clip(str(k), max_string, clipped): _to_json(v, max_string, clipped) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, max_string, clipped) for v in value]
    if isinstance(value, str):
        return _clip(value, max_string, clipped)
    if isinstance(value, (bytes, bytearray)):
        return {"$data": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, plistlib.UID):
        return int(value)
    return value


def json_data(value) -> bytes | None:
    """Inverse of to_json for one data value."""
    if isinstance(value, dict) and "$data" in value:
        return base64.b64decode(value["$data"])
    return None
