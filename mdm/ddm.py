"""Declarative device management, transport side: pure functions over the JSON the device
sends and receives (Apple: declarative/protocol, declarative/status). No Flask, no database.

The device reaches the server with `DeclarativeManagement` check-ins naming an endpoint:
  tokens                          -> {"SyncTokens": {"DeclarationsToken", "Timestamp"}}
  declaration-items               -> {"Declarations": {...}, "DeclarationsToken"}
  declaration/<kind>/<identifier> -> one declaration {"Type", "Identifier", "ServerToken", "Payload"}
  status                          <- a status report {"StatusItems", "Errors", "FullReport"}
What the declarations are is decided by the declarative feature package (a provider mdm calls).
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

from .protocol import ProtocolError

DECLARATION_KINDS = ("activation", "asset", "configuration", "management")
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
MAX_STATUS_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_ARRAY_ITEMS = 2000

# Status items whose value is an array of dictionaries keyed by "identifier": an incremental
# report carries only the changed entries, "_removed": true drops one.
KEYED_ARRAYS = ("security.certificate.list", "app.managed.list", "account.list.caldav", "account.list.carddav",
                "account.list.exchange", "account.list.google", "account.list.ldap", "account.list.mail.incoming",
                "account.list.mail.outgoing", "account.list.subscribed-calendar", "services.background-task")
# Status items whose value is itself a dictionary (not descended into when flattening).
DICT_ITEMS = ("management.declarations", "management.client-capabilities", "softwareupdate.pending-version",
              "softwareupdate.failure-reason", "softwareupdate.install-reason", "softwareupdate.beta-enrollment",
              "mdm.app", "screensharing.connection.group.unresolved-connection")


class UnknownDeclaration(LookupError):
    """The device asked for a declaration that is not (or no longer) in its set: 404."""


@dataclass(frozen=True)
class Endpoint:
    name: str                    # tokens | declaration-items | status | declaration
    kind: str | None = None      # for declaration/: activation | asset | configuration | management
    identifier: str | None = None


def parse_endpoint(value: str) -> Endpoint:
    if value in ("tokens", "declaration-items", "status"):
        return Endpoint(value)
    parts = value.split("/")
    if len(parts) == 3 and parts[0] == "declaration":
        kind, identifier = parts[1], parts[2]
        if kind not in DECLARATION_KINDS:
            raise ProtocolError(f"unknown declaration kind {kind[:32]!r} in Endpoint")
        if not IDENTIFIER_RE.match(identifier):
            raise ProtocolError("declaration identifier in Endpoint has an invalid format")
        return Endpoint("declaration", kind, identifier)
    raise ProtocolError(f"unknown declarative management Endpoint {value[:64]!r}")


def _check_depth(value, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"status report is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for v in value.values():
            _check_depth(v, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_ARRAY_ITEMS:
            raise ProtocolError(f"status report has an array of more than {MAX_ARRAY_ITEMS} entries")
        for v in value:
            _check_depth(v, depth + 1)


def load_json(data: bytes | None, *, what: str, max_bytes: int = MAX_STATUS_BYTES):
    if data is None:
        raise ProtocolError(f"{what}: Data is missing")
    if len(data) > max_bytes:
        raise ProtocolError(f"{what}: Data is larger than {max_bytes} bytes")
    try:
        value = json.loads(data)
    except RecursionError:
        raise ProtocolError(f"{what}: JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what}: Data is not valid JSON ({type(exc).__name__})") from None
    _check_depth(value)
    return value


@dataclass
class StatusReport:
    items: dict                  # flattened: "passcode.is-compliant" -> value
    errors: list
    full: bool
    size: int = 0
    raw_items: dict = field(default_factory=dict, repr=False)


def _flatten(tree: dict, prefix: str, out: dict) -> None:
    for key, value in tree.items():
        if not isinstance(key, str) or not key or len(key) > 64:
            raise ProtocolError("status report has an invalid status item key")
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and name not in DICT_ITEMS:
            _flatten(value, name, out)
        else:
            out[name] = value


def parse_status_report(data: bytes | None, *, max_bytes: int = MAX_STATUS_BYTES) -> StatusReport:
    body = load_json(data, what="status report", max_bytes=max_bytes)
    if not isinstance(body, dict):
        raise ProtocolError("status report must be a JSON object")
    items = body.get("StatusItems")
    errors = body.get("Errors", [])
    full = body.get("FullReport", False)
    if not isinstance(items, dict):
        raise ProtocolError("status report: StatusItems must be an object")
    if not isinstance(errors, list) or not isinstance(full, bool):
        raise ProtocolError("status report: Errors must be an array and FullReport a boolean")
    flat: dict = {}
    _flatten(items, "", flat)
    for name in KEYED_ARRAYS:
        if name in flat and not (isinstance(flat[name], list) and all(
                isinstance(e, dict) and isinstance(e.get("identifier"), str) for e in flat[name])):
            raise ProtocolError(f"status report: {name} must be an array of objects with an identifier")
    decl = flat.get("management.declarations")
    if decl is not None:
        if not isinstance(decl, dict) or not all(isinstance(decl.get(k, []), list) for k in
                                                 ("activations", "configurations", "assets", "management")):
            raise ProtocolError("status report: management.declarations must hold arrays")
        for k in ("activations", "configurations", "assets", "management"):
            for e in decl.get(k, []):
                if not isinstance(e, dict) or not isinstance(e.get("identifier"), str):
                    raise ProtocolError("status report: a declaration status lacks its identifier")
    return StatusReport(flat, errors, full, len(data or b""), items)


def _merge_keyed(old: list | None, new: list, full: bool) -> list:
    if full or not isinstance(old, list):
        return [e for e in new if not e.get("_removed")]
    by_id = {e.get("identifier"): e for e in old if isinstance(e, dict)}
    for e in new:
        if e.get("_removed"):
            by_id.pop(e["identifier"], None)
        else:
            by_id[e["identifier"]] = e
    return list(by_id.values())


def merge_status(latest: dict | None, report: StatusReport, at: dt.datetime) -> tuple[dict, list[str]]:
    """The device's latest value per status item after this report, and the names whose value
    changed. Stored as {name: {"value": v, "at": iso}}; a full report replaces keyed arrays whole."""
    merged = dict(latest or {})
    changed = []
    stamp = (at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at.astimezone(dt.timezone.utc)).isoformat()
    for name, value in report.items.items():
        if name in KEYED_ARRAYS:
            value = _merge_keyed((merged.get(name) or {}).get("value"), value, report.full)
        elif name == "management.declarations":
            old = (merged.get(name) or {}).get("value") or {}
            value = {k: _merge_keyed(old.get(k), value.get(k, []), report.full)
                     for k in ("activations", "configurations", "assets", "management")}
        before = merged.get(name)
        if before is None or before.get("value") != value:
            changed.append(name)
        merged[name] = {"value": value, "at": stamp}
    return merged, changed


def status_value(latest: dict | None, name: str):
    entry = (latest or {}).get(name)
    return entry.get("value") if isinstance(entry, dict) else None


def status_item(latest: dict | None, name: str) -> tuple:
    """(value, when it was reported) of one item of the merged report; (None, None) when the iPad has
    not reported it. One lookup: compliance reads four items of every iPad in its scheduled run."""
    entry = latest.get(name) if latest else None
    if entry.__class__ is not dict:
        return None, None
    value, at = entry.get("value"), entry.get("at")
    if at.__class__ is not str:
        return value, None
    try:
        at = dt.datetime.fromisoformat(at)
    except ValueError:
        return value, None
    # Stored as UTC ("+00:00"): already in the zone it is compared in.
    return value, at if at.tzinfo is dt.timezone.utc else at.astimezone(dt.timezone.utc)


def sync_tokens(declarations_token: str, timestamp: dt.datetime) -> dict:
    """The TokensResponse body (also the Data of a DeclarativeManagement command)."""
    if timestamp.tzinfo is not None:
        timestamp = timestamp.astimezone(dt.timezone.utc)
    ts = timestamp.replace(microsecond=0, tzinfo=None).isoformat() + "Z"
    return {"SyncTokens": {"DeclarationsToken": declarations_token, "Timestamp": ts}}


def dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
