"""JSON API: policies (CRUD, versions, assignment) and device verdicts (/api/v1)."""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from ipad_mdm.auth import require
from ipad_mdm.web import error, hooks, paging, unit_of_work
from mdm import device_for_request

from . import policies as svc
from .verdicts import current_verdict
from .models import VerdictTransition
from .rules import PolicyInputError

bp = Blueprint("compliance_api", __name__, url_prefix="/api/v1")


def _body():
    data = request.get_json(silent=True)
    if data is None and request.data:
        raise PolicyInputError("request body must be valid JSON")
    return data if data is not None else {}


def _policy_call(fn, *args, status: int = 200, versions: bool = False):
    try:
        with unit_of_work() as s:
            policy = fn(s, *args)
            return jsonify(svc.policy_dict(s, policy, versions=versions)), status
    except PolicyInputError as exc:
        return error(400, str(exc))
    except svc.PolicyNotFound as exc:
        return error(404, str(exc))
    except svc.PolicyConflict as exc:
        return error(409, str(exc))


@bp.post("/policies")
@require("policies.write")
def create_policy():
    try:
        body = _body()
    except PolicyInputError as exc:
        return error(400, str(exc))
    return _policy_call(lambda s: svc.create_policy(s, body, by=g.api_principal), status=201, versions=True)


@bp.get("/policies")
@require("policies.read")
def list_policies():
    include_deleted = request.args.get("include_deleted") in ("1", "true")
    with unit_of_work() as s:
        return jsonify({"policies": [svc.policy_dict(s, p) for p in svc.list_policies(s, include_deleted=include_deleted)]})


@bp.get("/policies/<int:policy_id>")
@require("policies.read")
def show_policy(policy_id):
    return _policy_call(lambda s: svc.get_policy(s, policy_id, include_deleted=True), versions=True)


@bp.put("/policies/<int:policy_id>")
@require("policies.write")
def update_policy(policy_id):
    try:
        body = _body()
    except PolicyInputError as exc:
        return error(400, str(exc))
    return _policy_call(lambda s: svc.update_policy(s, policy_id, body, by=g.api_principal), versions=True)


@bp.post("/policies/<int:policy_id>/assign")
@require("policies.write")
def assign_policy(policy_id):
    try:
        body = _body()
    except PolicyInputError as exc:
        return error(400, str(exc))
    return _policy_call(lambda s: svc.assign_policy(s, policy_id, body, by=g.api_principal), versions=True)


@bp.delete("/policies/<int:policy_id>")
@require("policies.write")
def delete_policy(policy_id):
    return _policy_call(lambda s: svc.delete_policy(s, policy_id, by=g.api_principal), versions=True)



@bp.get("/devices/<udid>/verdict")
@require("devices.read", unit_scoped=True)
def device_verdict(udid):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, f"unknown device {udid}")
        view = current_verdict(s, device.id)
        if view is None:
            return jsonify({"udid": udid, "state": None, "detail": "not evaluated yet"})
        access: dict = {}
        hooks().emit("access.describe", session=s, device=device, out=access)  # the gateway decides
        return jsonify({"udid": udid, **view.to_dict(), **access})


def _parse_time(name: str) -> dt.datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def transition_dict(t: VerdictTransition) -> dict:
    return {
        "id": t.id, "at": t.at.isoformat(), "from": t.from_state, "to": t.to_state, "trigger": t.trigger,
        "unit_id": t.unit_id, "grace_deadline": t.grace_deadline.isoformat() if t.grace_deadline else None,
        "escalation_deadline": t.escalation_deadline.isoformat() if t.escalation_deadline else None,
        "policy_versions": t.policy_versions, "failing_rules": t.failing_rules, "reasons_vi": t.reasons_vi,
        "reasons_en": t.reasons_en, "actions": t.actions,
    }


@bp.get("/devices/<udid>/verdict-history")
@require("devices.read", unit_scoped=True)
def verdict_history(udid):
    try:
        since, until = _parse_time("since"), _parse_time("until")
    except ValueError:
        return error(400, "since/until must be ISO 8601 timestamps")
    limit, _offset = paging(default_limit=200)
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, f"unknown device {udid}")
        stmt = select(VerdictTransition).where(VerdictTransition.device_id == device.id)
        if since:
            stmt = stmt.where(VerdictTransition.at >= since)
        if until:
            stmt = stmt.where(VerdictTransition.at < until)
        rows = s.scalars(stmt.order_by(VerdictTransition.at, VerdictTransition.id).limit(limit))
        return jsonify({"udid": udid, "transitions": [transition_dict(t) for t in rows]})
