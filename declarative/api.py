"""JSON API for declarations (/api/v1/declarations) and a device's declarative state.

Writes need "profiles.write" (a declaration configures devices just as a profile does) and an
office-wide token; reads need "devices.read", and a unit-scoped token sees only its unit's iPads.
"""
from __future__ import annotations

import functools

from flask import Blueprint, current_app, g, jsonify
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ipad_mdm.auth import require
from ipad_mdm.web import BadBody, BadPaging, error, json_object, office_wide_only, paging, unit_of_work
from mdm import CommandRefused, StatusReportRecord, device_for_request

from . import catalog, service, status, sync
from .catalog import DeclarationError

bp = Blueprint("declarative_api", __name__, url_prefix="/api/v1")


def _run(fn):
    try:
        return fn()
    except BadBody as exc:
        return error(400, str(exc))
    except DeclarationError as exc:
        return error(400, exc.message, key=exc.key)
    except (BadPaging, CommandRefused) as exc:
        return error(400, str(exc))
    except service.NotFound as exc:
        return error(404, str(exc))
    except service.Conflict as exc:
        return error(409, str(exc))
    except IntegrityError:
        return error(409, "conflicting concurrent change; retry")


def _change(view):
    """A write: office-wide tokens only, service errors mapped by _run."""
    @functools.wraps(view)
    def inner(*args, **kwargs):
        return office_wide_only("declaration changes") or _run(lambda: view(*args, **kwargs))
    return inner


def source_summary(source: dict | None) -> dict | None:
    """What an operator may see of a source: never data bytes, only what they are."""
    if not source:
        return None
    if "data" in source:
        import base64

        return {"data": {"bytes": len(base64.b64decode(source["data"])), "content_type": source.get("content_type")}}
    return source


def declaration_dict(decl, *, full: bool = False) -> dict:
    ver = service.current(decl)
    out = {"identifier": decl.identifier, "type": decl.type, "kind": decl.kind, "display_name": decl.display_name,
           "description": decl.description, "version": decl.current_version, "updated_at": decl.updated_at.isoformat(),
           "assignments": [{"target": a.target_type, "device_id": a.device_id, "unit_id": a.unit_id,
                            "predicate": a.predicate} for a in decl.assignments]}
    if full:
        out["payload"] = ver.payload
        out["source"] = source_summary(ver.source)
        out["versions"] = [{"version": v.version, "created_by": v.created_by, "created_at": v.created_at.isoformat()}
                           for v in decl.versions]
    return out


def _sync(s, device_ids, *, force: bool = False) -> dict:
    return sync.sync_after_change(s, device_ids, current_app.extensions["declarative.renderer"],
                                  requested_by=g.api_principal, force=force)


@bp.get("/declarations")
@require("devices.read")
def list_declarations():
    with unit_of_work() as s:
        return jsonify({"declarations": [declaration_dict(d) for d in service.list_all(s)],
                        "types": [catalog.TYPES[t].short for t in catalog.OPERATOR_TYPES]})


@bp.post("/declarations")
@require("profiles.write")
@_change
def create_declaration():
    body = json_object()
    with unit_of_work() as s:
        decl = service.create(s, identifier=body.get("identifier"), type=body.get("type"),
                              display_name=body.get("display_name"), payload=body.get("payload"),
                              source=body.get("source"), description=body.get("description"),
                              created_by=g.api_principal)
        return jsonify(declaration_dict(decl, full=True)), 201


@bp.get("/declarations/<identifier>")
@require("devices.read")
def show_declaration(identifier):
    def run():
        with unit_of_work() as s:
            return jsonify(declaration_dict(service.get(s, identifier), full=True))

    return _run(run)


@bp.put("/declarations/<identifier>")
@require("profiles.write")
@_change
def update_declaration(identifier):
    body = json_object()
    with unit_of_work() as s:
        decl = service.get(s, identifier)
        service.new_version(s, decl, payload=body.get("payload"), source=body.get("source"),
                            display_name=body.get("display_name"), description=body.get("description"),
                            created_by=g.api_principal)
        return jsonify({**declaration_dict(decl, full=True), **_sync(s, None)})


@bp.delete("/declarations/<identifier>")
@require("profiles.write")
@_change
def delete_declaration(identifier):
    with unit_of_work() as s:
        decl = service.get(s, identifier)
        reach = service.assigned_device_ids(s, decl)
        service.delete(s, decl)
        return jsonify({"deleted": identifier, **_sync(s, reach)})


def _targets(body):
    return dict(devices=body.get("devices", []), units=body.get("units", []), all_devices=body.get("all", False))


@bp.post("/declarations/<identifier>/assign")
@require("profiles.write")
@_change
def assign(identifier):
    body = json_object()
    with unit_of_work() as s:
        decl = service.get(s, identifier)
        created = service.assign(s, decl, predicate=body.get("predicate"), created_by=g.api_principal,
                                 **_targets(body))
        return jsonify({**declaration_dict(decl), "created": len(created), **_sync(s, service.assigned_device_ids(s, decl))})


@bp.post("/declarations/<identifier>/unassign")
@require("profiles.write")
@_change
def unassign(identifier):
    body = json_object()
    with unit_of_work() as s:
        decl = service.get(s, identifier)
        before = service.assigned_device_ids(s, decl)
        removed = service.unassign(s, decl, **_targets(body))
        return jsonify({**declaration_dict(decl), "removed": removed, **_sync(s, before)})


@bp.get("/os-updates")
@require("devices.read")
def os_updates():
    """Enforced iPadOS updates: per declaration, where each iPad it reaches stands."""
    from . import osupdate

    with unit_of_work() as s:
        return jsonify({"enforcements": osupdate.progress(s)})


@bp.get("/devices/<udid>/declarations")
@require("devices.read", unit_scoped=True)
def device_declarations(udid):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, "unknown device")
        out = status.device_summary(s, device)
        out["uses_ddm"] = device.ddm_enabled_at is not None
        if device.ddm_enabled_at is not None:
            dset = sync.device_set(s, device, current_app.extensions["declarative.renderer"])
            out["declarations_token"] = dset.token
            out["set"] = [{"identifier": r.identifier, "kind": r.kind, "type": r.type, "server_token": r.server_token}
                          for r in sorted(dset.declarations.values(), key=lambda r: (r.kind, r.identifier))]
            out["withheld"] = dset.withheld
        return jsonify(out)


@bp.post("/devices/<udid>/declarations/sync")
@require("commands.send", unit_scoped=True)
def device_sync(udid):
    def run():
        with unit_of_work() as s:
            device = device_for_request(s, udid)
            if device is None:
                return error(404, "unknown device")
            if device.ddm_enabled_at is None:
                return error(409, "this iPad does not use declarative management (MDM-command path)")
            return jsonify({"udid": udid, **_sync(s, [device.id], force=True)})

    return _run(run)


@bp.get("/devices/<udid>/status-reports")
@require("devices.read", unit_scoped=True)
def status_reports(udid):
    def run():
        limit, offset = paging(default_limit=50, max_limit=500)
        with unit_of_work() as s:
            device = device_for_request(s, udid)
            if device is None:
                return error(404, "unknown device")
            total = s.scalar(select(func.count()).select_from(StatusReportRecord)
                             .where(StatusReportRecord.device_id == device.id))
            if offset and offset >= total:
                raise BadPaging(f"offset {offset} is beyond the {total} reports")
            rows = s.scalars(select(StatusReportRecord).where(StatusReportRecord.device_id == device.id)
                             .order_by(StatusReportRecord.id.desc()).offset(offset).limit(limit))
            return jsonify({"total": total, "offset": offset, "limit": limit, "reports": [
                {"received_at": r.received_at.isoformat(), "full": r.full_report, "changed": r.changed,
                 "items": r.items, "errors": r.errors or []} for r in rows]})

    return _run(run)



