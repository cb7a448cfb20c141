"""The core's own API routes: bearer tokens and security events (/api/v1)."""
from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from . import security_events
from .auth import create_api_token, require
from .models import ROLES, Unit
from .web import error, paging, unit_of_work

log = logging.getLogger("ipad_mdm.api")
bp = Blueprint("core_api", __name__, url_prefix="/api/v1")


@bp.post("/api-tokens")
@require("tokens.create", unit_scoped=True)
def create_token():
    """A new token with the caller's own role, and the caller's unit (or a unit of the caller's
    choosing when the caller is office-wide): a token never mints more than it holds."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "request body must be a JSON object")
    unknown = set(body) - {"name", "role", "unit"}
    if unknown:
        return error(400, f"unknown field(s) {', '.join(sorted(unknown))}; allowed: name, role, unit")
    name, role, unit_code = body.get("name"), body.get("role", g.api_role), body.get("unit")
    if role not in ROLES:
        return error(400, f"role must be one of {', '.join(ROLES)}")
    if role != g.api_role:
        return error(403, f"a {g.api_role} token may only create {g.api_role} tokens")
    if unit_code is not None and not isinstance(unit_code, str):
        return error(400, "unit must be a unit code")
    with unit_of_work() as s:
        unit = s.scalar(select(Unit).where(Unit.code == unit_code)) if unit_code else None
        if unit_code and unit is None:
            return error(404, f"unknown unit {unit_code}")
        if g.api_unit_id is not None:
            if unit is not None and unit.id != g.api_unit_id:
                return error(403, "a unit's token may only create tokens for its own unit")
            unit = s.get(Unit, g.api_unit_id)
        try:
            token = create_api_token(s, name, role, unit.id if unit else None)
        except ValueError as exc:
            return error(400, str(exc))
    log.info("API token %r (%s, unit %s) created by %s", name, role, unit.code if unit else "-", g.api_principal)
    return jsonify({"name": name, "role": role, "unit": unit.code if unit else None, "token": token}), 201


@bp.get("/security-events")
@require("security.read")
def list_security_events():
    limit, offset = paging()
    kind = request.args.get("kind") or None
    if kind is not None and kind not in security_events.KINDS:
        return error(400, f"kind must be one of {', '.join(security_events.KINDS)}")
    open_only = request.args.get("open") in ("1", "true")
    with unit_of_work() as s:
        total, rows = security_events.query(s, limit=limit, offset=offset, kind=kind, open_only=open_only)
        return jsonify({"total": total, "limit": limit, "offset": offset,
                        "events": [security_events.to_dict(e) for e in rows]})


@bp.post("/security-events/<int:event_id>/acknowledge")
@require("security.write")
def acknowledge_security_event(event_id: int):
    body = request.get_json(silent=True) or {}
    note = body.get("note", "") if isinstance(body, dict) else None
    if not isinstance(note, str) or len(note) > 2000:
        return error(400, "note must be a string of at most 2000 characters")
    with unit_of_work() as s:
        try:
            event = security_events.acknowledge(s, event_id, by=g.api_principal, note=note)
        except security_events.EventNotFound as exc:
            return error(404, str(exc))
        return jsonify(security_events.to_dict(event))


def register(app, hooks, instance) -> None:
    app.register_blueprint(bp)
