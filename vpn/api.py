"""JSON API: /api/v1/vpn/peers and /api/v1/devices/<udid>/vpn[/cut|/restore]."""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from ipad_mdm.auth import require
from ipad_mdm.web import error, instance, paging, unit_of_work
from mdm import device_for_request

from . import service
from .models import VpnApply

bp = Blueprint("vpn_api", __name__, url_prefix="/api/v1")


def _last_apply(s) -> dict | None:
    row = s.scalar(select(VpnApply).order_by(VpnApply.id.desc()).limit(1))
    if row is None:
        return None
    return {"at": row.at.isoformat(), "method": row.method, "config_sha256": row.config_sha256,
            "active_peers": row.active_peers, "ok": row.ok, "detail": row.detail}


@bp.get("/vpn/peers")
@require("devices.read", unit_scoped=True)
def list_peers():
    state = request.args.get("state")
    if state is not None and state not in ("active", "cut", "removed"):
        return error(400, "state must be active, cut or removed")
    limit, offset = paging()
    with unit_of_work() as s:
        total, peers = service.list_peers(s, state=state, unit_id=g.api_unit_id, limit=limit, offset=offset)
        return jsonify({"total": total, "peers": peers, "last_apply": _last_apply(s)})


@bp.get("/devices/<udid>/vpn")
@require("devices.read", unit_scoped=True)
def show(udid):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, f"unknown device {udid}")
        return jsonify({"udid": udid, "vpn": service.peer_status(s, device),
                        "events": service.device_events(s, device)})


def _reason() -> str:
    body = request.get_json(silent=True)
    if request.data and not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    reason = (body or {}).get("reason")
    if reason is None:
        return f"{request.path.rsplit('/', 1)[-1]} by {g.api_principal}"
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= 255:
        raise ValueError("reason must be a string of 1-255 characters")
    return reason.strip()


def _change(udid: str, operation):
    try:
        reason = _reason()
    except ValueError as exc:
        return error(400, str(exc))
    try:
        with unit_of_work() as s:
            device = device_for_request(s, udid)
            if device is None:
                return error(404, f"unknown device {udid}")
            status = operation(s, instance(), device, reason, by="manual", requested_by=g.api_principal)
    except service.VpnError as exc:
        return error(exc.status, str(exc))
    return jsonify({"udid": udid, "vpn": status})


@bp.post("/devices/<udid>/vpn/cut")
@require("commands.send", unit_scoped=True)
def cut(udid):
    return _change(udid, service.cut_peer)


@bp.post("/devices/<udid>/vpn/restore")
@require("commands.send", unit_scoped=True)
def restore(udid):
    return _change(udid, service.restore_peer)
