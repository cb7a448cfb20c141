"""Declarations as data: create, version, assign, unassign, delete.

Everything takes an open session and never commits; the caller owns the unit of work (the API,
the CLI, the console). Functions that change what devices should have return the ids of the
devices to sync (declarative.sync.request_sync, then push after commit).
"""
from __future__ import annotations

import base64
import binascii
import logging

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit
from mdm import Device

from . import catalog
from .catalog import DeclarationError
from .models import Declaration, DeclarationAssignment, DeclarationVersion

log = logging.getLogger(__name__)
MAX_DATA_BYTES = 1024 * 1024


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


def _text(name: str, value, *, required: bool, max_len: int = 255) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise DeclarationError(name, f"{name} must be a non-empty string of at most {max_len} characters")
    return value.strip()


def _check_source(session: Session, dtype: catalog.DeclarationType, source) -> dict | None:
    """Where the server-rendered part of an asset or legacy profile comes from."""
    if not dtype.sources:
        if source not in (None, {}):
            raise DeclarationError("source", f"{dtype.short} takes no source")
        return None
    if not isinstance(source, dict) or len(source) != 1 + ("content_type" in source) or \
            not any(k in source for k in dtype.sources):
        raise DeclarationError("source", f"{dtype.short} needs a source: one of " + ", ".join(dtype.sources))
    if "certificate" in source:
        cert = parse_certificate(source["certificate"])
        return {"certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}
    if "instance_ca" in source:
        if source["instance_ca"] is not True:
            raise DeclarationError("source.instance_ca", "source.instance_ca must be true")
        return {"instance_ca": True}
    if "device_identity" in source:
        opts = source["device_identity"]
        if not isinstance(opts, dict) or set(opts) - {"days", "purpose"}:
            raise DeclarationError("source.device_identity", "source.device_identity takes days and purpose")
        days = opts.get("days", 365)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 825:
            raise DeclarationError("source.device_identity.days", "source.device_identity.days must be 1-825")
        purpose = _text("source.device_identity.purpose", opts.get("purpose", "vpn"), required=True, max_len=32)
        return {"device_identity": {"days": days, "purpose": purpose}}
    if "data" in source:
        raw = source["data"]
        try:
            data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            data = None
        if not data or len(data) > MAX_DATA_BYTES:
            raise DeclarationError("source.data", f"source.data must be base64 of 1 byte to {MAX_DATA_BYTES} bytes")
        ctype = _text("source.content_type", source.get("content_type", "application/octet-stream"), required=True,
                      max_len=128)
        return {"data": raw, "content_type": ctype}
    if "profile" in source:
        from profiles import profile_exists

        ident = _text("source.profile", source["profile"], required=True)
        if not profile_exists(session, ident):
            raise DeclarationError("source.profile", f"unknown configuration profile {ident!r}")
        return {"profile": ident}
    raise DeclarationError("source", "unsupported source")  # pragma: no cover - checked above


def parse_certificate(value) -> x509.Certificate:
    if isinstance(value, str):
        try:
            if "-----BEGIN" in value:
                return x509.load_pem_x509_certificate(value.encode())
            return x509.load_der_x509_certificate(base64.b64decode(value, validate=True))
        except (ValueError, binascii.Error):
            pass
    raise DeclarationError("source.certificate", "source.certificate must be a PEM or base64 DER certificate")


def _check_references(session: Session, dtype: catalog.DeclarationType, payload: dict) -> None:
    """A configuration names existing assets of the right type; an activation existing configurations."""
    if dtype.asset_reference:
        ref = payload["CredentialAssetReference"]
        asset = session.scalar(select(Declaration).where(Declaration.identifier == ref))
        if asset is None or asset.type not in dtype.asset_reference:
            raise DeclarationError("CredentialAssetReference", f"CredentialAssetReference must name an asset of type "
                                   f"{' or '.join(t[len(catalog.PREFIX):] for t in dtype.asset_reference)}")
    if dtype.kind == "activation":
        for i, ident in enumerate(payload["StandardConfigurations"]):
            cfg = session.scalar(select(Declaration).where(Declaration.identifier == ident))
            if cfg is None or cfg.kind != "configuration":
                raise DeclarationError(f"StandardConfigurations[{i}]", f"{ident!r} is not a configuration declaration")


def _version(session, decl: Declaration, dtype, number: int, payload, source, created_by: str) -> DeclarationVersion:
    payload = catalog.validate_payload(dtype, payload)
    _check_references(session, dtype, payload)
    v = DeclarationVersion(version=number, payload=payload, source=_check_source(session, dtype, source),
                           created_by=created_by, created_at=utcnow())
    decl.versions.append(v)
    decl.current_version = number
    decl.updated_at = utcnow()
    session.flush()
    return v


def create(session: Session, *, identifier, type, display_name, payload, source=None, description=None,
           created_by: str = "") -> Declaration:
    dtype = catalog.type_of(type)
    if dtype.type not in catalog.OPERATOR_TYPES:
        raise DeclarationError("type", f"{dtype.short} is built by the server")
    if not isinstance(identifier, str) or not catalog.IDENTIFIER_RE.match(identifier):
        raise DeclarationError("identifier", "identifier must be 1-64 letters, digits, '.', '-' or '_'")
    if identifier.startswith(catalog.RESERVED_PREFIX):
        raise DeclarationError("identifier", f"identifiers starting with {catalog.RESERVED_PREFIX} are the server's own")
    display_name = _text("display_name", display_name, required=True)
    description = _text("description", description, required=False, max_len=4000)
    if session.scalar(select(Declaration.id).where(Declaration.identifier == identifier)):
        raise Conflict(f"a declaration with identifier {identifier!r} already exists")
    decl = Declaration(identifier=identifier, type=dtype.type, kind=dtype.kind, display_name=display_name,
                       description=description, current_version=0, created_by=created_by, created_at=utcnow(),
                       updated_at=utcnow())
    session.add(decl)
    _version(session, decl, dtype, 1, payload, source, created_by)
    log.info("declaration %s (%s) created by %s", identifier, dtype.short, created_by)
    return decl


def new_version(session: Session, decl: Declaration, *, payload, source=None, display_name=None, description=None,
                created_by: str = "") -> DeclarationVersion:
    dtype = catalog.TYPES[decl.type]
    if display_name is not None:
        decl.display_name = _text("display_name", display_name, required=True)
    if description is not None:
        decl.description = _text("description", description, required=False, max_len=4000)
    if source is None and dtype.sources:
        source = current(decl).source
    number = max(v.version for v in decl.versions) + 1
    v = _version(session, decl, dtype, number, payload, source, created_by)
    log.info("declaration %s version %d created by %s", decl.identifier, number, created_by)
    return v


def current(decl: Declaration) -> DeclarationVersion:
    return next(v for v in decl.versions if v.version == decl.current_version)


def get(session: Session, identifier: str) -> Declaration:
    decl = session.scalar(select(Declaration).where(Declaration.identifier == identifier))
    if decl is None:
        raise NotFound(f"unknown declaration {str(identifier)[:64]!r}")
    return decl


def list_all(session: Session) -> list[Declaration]:
    return list(session.scalars(select(Declaration).order_by(Declaration.kind, Declaration.identifier)))


def _targets(session: Session, devices, units, all_devices) -> list[tuple[str, int | None, int | None]]:
    if not isinstance(devices, (list, tuple)) or not isinstance(units, (list, tuple)) or not isinstance(all_devices, bool):
        raise DeclarationError("targets", "devices and units must be arrays, all must be a boolean")
    wanted = []
    for udid in devices:
        device = session.scalar(select(Device).where(Device.udid == udid)) if isinstance(udid, str) else None
        if device is None:
            raise NotFound(f"unknown device {str(udid)[:64]}")
        wanted.append(("device", device.id, None))
    for code in units:
        unit = session.scalar(select(Unit).where(Unit.code == code)) if isinstance(code, str) else None
        if unit is None:
            raise NotFound(f"unknown unit {str(code)[:64]!r}")
        wanted.append(("unit", None, unit.id))
    if all_devices:
        wanted.append(("all", None, None))
    return list(dict.fromkeys(wanted))


def assign(session: Session, decl: Declaration, *, devices=(), units=(), all_devices: bool = False,
           predicate: str | None = None, created_by: str = "") -> list[DeclarationAssignment]:
    wanted = _targets(session, devices, units, all_devices)
    if not wanted:
        raise DeclarationError("targets", "name at least one target: devices, units or all")
    predicate = _text("predicate", predicate, required=False, max_len=4000)
    if predicate is not None and decl.kind != "configuration":
        raise DeclarationError("predicate", "a predicate applies to configurations (it goes into their activation)")
    have = {(a.target_type, a.device_id, a.unit_id): a for a in decl.assignments}
    created = []
    for target in wanted:
        if target in have:
            have[target].predicate = predicate
            continue
        a = DeclarationAssignment(target_type=target[0], device_id=target[1], unit_id=target[2], predicate=predicate,
                                  created_by=created_by, created_at=utcnow())
        decl.assignments.append(a)
        created.append(a)
    decl.updated_at = utcnow()
    session.flush()
    return created


def unassign(session: Session, decl: Declaration, *, devices=(), units=(), all_devices: bool = False) -> int:
    wanted = set(_targets(session, devices, units, all_devices))
    gone = [a for a in decl.assignments if (a.target_type, a.device_id, a.unit_id) in wanted]
    for a in gone:
        decl.assignments.remove(a)
    decl.updated_at = utcnow()
    session.flush()
    return len(gone)


def referrers(session: Session, decl: Declaration) -> list[str]:
    """Declarations whose current version names this one (an asset or a configuration)."""
    out = []
    for other in session.scalars(select(Declaration).where(Declaration.id != decl.id)):
        p = current(other).payload
        if p.get("CredentialAssetReference") == decl.identifier or decl.identifier in p.get("StandardConfigurations", []):
            out.append(other.identifier)
    return out


def delete(session: Session, decl: Declaration) -> None:
    users = referrers(session, decl)
    if users:
        raise Conflict(f"declaration {decl.identifier!r} is used by {', '.join(users)}; change those first")
    session.delete(decl)
    session.flush()


def assigned_device_ids(session: Session, decl: Declaration) -> list[int] | None:
    """Device ids a declaration's assignments reach; None = every device."""
    if any(a.target_type == "all" for a in decl.assignments):
        return None
    conds = []
    ids = [a.device_id for a in decl.assignments if a.target_type == "device"]
    units = [a.unit_id for a in decl.assignments if a.target_type == "unit"]
    if ids:
        conds.append(Device.id.in_(ids))
    if units:
        conds.append(Device.unit_id.in_(units))
    if not conds:
        return []
    return list(session.scalars(select(Device.id).where(or_(*conds))))
