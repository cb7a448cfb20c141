"""JSON admin API for enrollment, devices and commands (/api/v1)."""
from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify, request

from ipad_mdm.auth import PERMISSIONS, require
from ipad_mdm.web import error, hooks, instance, paging, push_after_commit, unit_of_work

from . import protocol, service
from .commands import CommandRefused
from .models import Device
from .scope import caller_unit_id, device_for_request, in_scope

log = logging.getLogger(__name__)

bp = Blueprint("mdm_api", __name__, url_prefix="/api/v1")


def _json_body() -> dict:
    data = request.get_json(silent=True)
    if data is None:
        data = {} if not request.data else None
    if not isinstance(data, dict):
        raise ValueError("request body must be a JSON object")
    return data


@bp.post("/enrollment-tokens")
@require("enroll.create", unit_scoped=True)
def create_enrollment_token():
    try:
        body = _json_body()
        serial, unit = body.get("serial_number"), body.get("unit")
        if serial is not None and (not isinstance(serial, str) or not 1 <= len(serial) <= 64):
            return error(400, "serial_number must be a string of 1-64 characters")
        if unit is not None and not isinstance(unit, str):
            return error(400, "unit must be a unit code")
        with unit_of_work() as s:
            if caller_unit_id() is not None:
                # A unit's token enrolls into its own unit only.
                own = service.unit_code_of(s, caller_unit_id())
                if unit not in (None, own):
                    return error(403, f"this token may only enroll devices into unit {own}")
                unit = own
            result = service.create_enrollment(s, instance().settings, serial_number=serial,
                                               unit_code=unit, created_by=g.api_principal)
    except ValueError as exc:
        return error(400, str(exc))
    except service.NotFound as exc:
        return error(404, str(exc))
    return jsonify(result), 201


@bp.get("/enrollment-tokens")
@require("enroll.create", unit_scoped=True)
def list_enrollment_tokens():
    limit, offset = paging()
    include_spent = request.args.get("all", "") in ("1", "true", "yes")
    with unit_of_work() as s:
        total, rows = service.list_enrollment_tokens(s, include_spent=include_spent, unit_id=caller_unit_id(),
                                                     limit=limit, offset=offset)
    return jsonify({"total": total, "enrollment_tokens": rows})


@bp.post("/enrollment-tokens/<int:token_id>/revoke")
@require("enroll.create", unit_scoped=True)
def revoke_enrollment_token(token_id):
    try:
        with unit_of_work() as s:
            result = service.revoke_enrollment_token(s, token_id, unit_id=caller_unit_id())
            log.info("enrollment token #%s revoked by %s", token_id, g.api_principal)
    except service.NotFound as exc:
        return error(404, str(exc))
    except ValueError as exc:
        return error(409, str(exc))
    return jsonify(result)


@bp.get("/devices")
@require("devices.read", unit_scoped=True)
def list_devices():
    limit, offset = paging()
    with unit_of_work() as s:
        total, rows = service.list_devices(s, limit=limit, offset=offset, unit_id=g.api_unit_id)
        return jsonify({"total": total, "devices": [service.device_summary(d) for d in rows]})


@bp.get("/devices/<udid>")
@require("devices.read", unit_scoped=True)
def show_device(udid):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, f"unknown device {udid}")
        return jsonify(service.device_detail(s, hooks(), device))


@bp.post("/devices/<udid>/re-enroll")
@require("enroll.create", unit_scoped=True)
def reenroll_device(udid):
    """An erased or replaced iPad: a one-time token that lets this device, and only it, enroll again."""
    with unit_of_work() as s:
        if device_for_request(s, udid) is None:
            return error(404, f"unknown device {udid}")
        result = service.create_reenrollment(s, instance().settings, udid, created_by=g.api_principal)
    log.warning("re-enrollment of %s authorised by %s (token #%s)", udid, g.api_principal, result["id"])
    return jsonify(result), 201


@bp.get("/devices/<udid>/commands")
@require("devices.read", unit_scoped=True)
def device_commands(udid):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, f"unknown device {udid}")
        return jsonify({"commands": [service.command_detail(s, c) for c in service.device_commands(s, device)]})


@bp.post("/devices/<udid>/commands")
@require("commands.send", unit_scoped=True)
def send_command(udid):
    try:
        body = _json_body()
    except ValueError as exc:
        return error(400, str(exc))
    request_type = body.get("request_type")
    params = body.get("params")
    if not isinstance(request_type, str):
        return error(400, "request_type is required")
    if params is not None and not isinstance(params, dict):
        return error(400, "params must be an object")
    if request_type in protocol.DESTRUCTIVE_COMMANDS and "commands.destructive" not in PERMISSIONS[g.api_role]:
        return error(403, f"role {g.api_role} may not send {request_type}")
    if request_type in ("InstallProfile", "ClearPasscode"):
        return error(400, f"{request_type} is sent by the server itself, not through this endpoint")
    try:
        with unit_of_work() as s:
            if device_for_request(s, udid) is None:
                return error(404, f"unknown device {udid}")
            cmd = service.send_command(s, udid, request_type, params, requested_by=g.api_principal)
            push_after_commit(s, cmd.device_id)
            detail = service.command_detail(s, cmd)
    except service.NotFound as exc:
        return error(404, str(exc))
    except (protocol.ProtocolError, CommandRefused) as exc:
        return error(400, str(exc))
    if s.info.get("push_deferred"):
        detail["push"] = "deferred"
        detail["push_note"] = "queued; push deferred (queue unavailable): sent when the queue is back"
    return jsonify(detail), 201


@bp.get("/commands/<command_uuid>")
@require("devices.read", unit_scoped=True)
def show_command(command_uuid):
    with unit_of_work() as s:
        try:
            cmd = service.get_command(s, command_uuid)
        except service.NotFound as exc:
            return error(404, str(exc))
        if caller_unit_id() is not None and not in_scope(s.get(Device, cmd.device_id)):
            return error(404, f"unknown command {command_uuid}")
        return jsonify(service.command_detail(s, cmd))
