"""Validation against Apple's published device-management schemas (YAML, apple/device-management).

The schemas are read where the team keeps them (../shared/apple-device-management next to the
repository, or APPLE_DM_SCHEMAS); they are not copied into the project. `problems()` checks a
value against a schema's payloadkeys: required keys, no unknown keys, types, rangelists, ranges,
and no key Apple marks as unavailable on iPadOS.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def schema_root() -> Path | None:
    for candidate in (os.environ.get("APPLE_DM_SCHEMAS"), ROOT.parent / "shared" / "apple-device-management",
                      Path("/work/shared/apple-device-management")):
        if candidate and (Path(candidate) / "declarative").is_dir():
            return Path(candidate)
    return None


@lru_cache(maxsize=None)
def load(relpath: str) -> dict:
    return yaml.safe_load((schema_root() / relpath).read_text())


@lru_cache(maxsize=None)
def declaration_schemas() -> dict[str, dict]:
    """Declaration Type -> its schema document."""
    out = {}
    for path in (schema_root() / "declarative" / "declarations").rglob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        dtype = (doc.get("payload") or {}).get("declarationtype")
        if dtype and dtype != "any":
            out[dtype] = doc
    return out


_TYPES = {"<string>": (str,), "<integer>": (int,), "<boolean>": (bool,), "<dictionary>": (dict,),
          "<array>": (list,), "<real>": (int, float), "<data>": (bytes, str), "<date>": (str,)}


def _ios_unavailable(key: dict) -> bool:
    ios = (key.get("supportedOS") or {}).get("iOS") or {}
    return ios.get("introduced") == "n/a"


def problems(value, payloadkeys: list, path: str = "") -> list[str]:
    out: list[str] = []
    if not isinstance(value, dict):
        return [f"{path or 'value'} is not a dictionary"]
    keys = {k["key"]: k for k in payloadkeys}
    if "ANY" not in keys:
        for name in value:
            if name not in keys:
                out.append(f"{path}{name}: not in Apple's schema")
    for name, spec in keys.items():
        if name == "ANY":
            continue
        where = f"{path}{name}"
        if name not in value:
            if spec.get("presence") == "required":
                out.append(f"{where}: required key missing")
            continue
        if _ios_unavailable(spec):
            out.append(f"{where}: Apple marks it unavailable on iPadOS")
        out += _check(value[name], spec, where)
    return out


def _check(v, spec: dict, where: str) -> list[str]:
    kind = spec.get("type")
    if kind == "<any>" or kind not in _TYPES:
        return []
    types = _TYPES[kind]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        return [f"{where}: {type(v).__name__} is not {kind}"]
    out = []
    if spec.get("rangelist") and kind != "<array>" and v not in spec["rangelist"]:
        out.append(f"{where}: {v!r} not in {spec['rangelist']}")
    rng = spec.get("range") or {}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if ("min" in rng and v < rng["min"]) or ("max" in rng and v > rng["max"]):
            out.append(f"{where}: {v} outside {rng}")
    if kind == "<dictionary>" and spec.get("subkeys"):
        out += problems(v, spec["subkeys"], where + ".")
    if kind == "<array>" and spec.get("subkeys"):
        element = spec["subkeys"][0]
        for i, item in enumerate(v):
            out += _check(item, element, f"{where}[{i}]")
    return out


def declaration_problems(doc: dict) -> list[str]:
    """A whole declaration: DeclarationBase keys, then the payload against its type's schema."""
    base = load("declarative/declarations/declarationbase.yaml")
    out = problems(doc, base["payloadkeys"])
    schema = declaration_schemas().get(doc.get("Type"))
    if schema is None:
        return out + [f"{doc.get('Type')}: no Apple schema for this type"]
    if len(doc.get("Identifier", "").encode()) > 64 or len(doc.get("ServerToken", "").encode()) > 64:
        out.append("Identifier or ServerToken longer than 64 octets")
    return out + problems(doc["Payload"], schema["payloadkeys"], f"{doc['Type']}: ")
