"""JSON admin API of the gateway (/api/v1).

  POST   /api/v1/leaders                      devices.write    create a leader
  GET    /api/v1/leaders                      devices.write    list leaders (?unit=CODE&active=true)
  PATCH  /api/v1/leaders/<id>                 devices.write    change title/role/unit/active
  PUT    /api/v1/devices/<udid>/assignment    devices.write    {"leader_id": N}: hand the iPad over
  DELETE /api/v1/devices/<udid>/assignment    devices.write    the iPad was returned
  GET    /api/v1/devices/<udid>/assignment    devices.write    the current assignment
  POST   /api/v1/documents                    documents.admin  multipart upload (see upload_document)
  GET    /api/v1/documents                    documents.admin  list with signature status
  GET    /api/v1/documents/<public_id>        documents.admin  metadata and signature details
  DELETE /api/v1/documents/<public_id>        documents.admin  withdraw (kept for the audit trail)
  GET    /api/v1/audit/gateway                audit.read       decisions; filters device, leader,
                                                               decision, reason, since, until; paging
  GET    /api/v1/audit/gateway/verify         audit.read       recompute the hash chain
"""
from __future__ import annotations

import datetime as dt
import os

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import func, select

from ipad_mdm.auth import require
from ipad_mdm.models import Unit
from ipad_mdm.web import error, instance, int_arg, paging, unit_of_work
from mdm import Device
from mdm import caller_unit_id, device_for_request

from . import audit, service
from .models import DeviceAssignment, Document, GatewayAuditEvent, Leader

bp = Blueprint("document_gateway_api", __name__, url_prefix="/api/v1")

DEFAULT_MAX_DOCUMENT_BYTES = 50 * 1024 * 1024


def max_document_bytes(settings) -> int:
    raw = settings.extra.get("document_max_bytes", os.environ.get("IPAD_MDM_DOCUMENT_MAX_BYTES"))
    return int(raw) if raw not in (None, "") else DEFAULT_MAX_DOCUMENT_BYTES


def _json() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise service.GatewayError("request body must be a JSON object")
    return data


def _by() -> str:
    return getattr(g, "api_principal", "") or ""



# ------------------------------------------------------------------ leaders
@bp.post("/leaders")
@require("devices.write")
def create_leader():
    try:
        body = _json()
        unknown = set(body) - {"full_name", "title", "unit", "unit_id", "role", "active"}
        if unknown:
            raise service.GatewayError(f"unknown field(s) {', '.join(sorted(unknown))}")
        with unit_of_work() as s:
            leader = service.create_leader(s, body.get("full_name"), body.get("unit", body.get("unit_id")),
                                           body.get("role"), title=body.get("title") or "",
                                           active=body.get("active", True), created_by=_by())
            out = service.leader_dict(leader, [])
    except service.GatewayError as exc:
        return error(exc.status, str(exc))
    return jsonify(out), 201


@bp.get("/leaders")
@require("devices.write")
def list_leaders():
    with unit_of_work() as s:
        stmt = select(Leader).order_by(Leader.id)
        if request.args.get("unit"):
            stmt = stmt.join(Unit, Unit.id == Leader.unit_id).where(Unit.code == request.args["unit"])
        if request.args.get("active") in ("true", "false"):
            stmt = stmt.where(Leader.active.is_(request.args["active"] == "true"))
        leaders = s.scalars(stmt).all()
        devices: dict[int, list[str]] = {}
        for leader_id, udid in s.execute(
                select(DeviceAssignment.leader_id, Device.udid).join(Device, Device.id == DeviceAssignment.device_id)
                .where(DeviceAssignment.returned_at.is_(None))):
            devices.setdefault(leader_id, []).append(udid)
        return jsonify({"leaders": [service.leader_dict(x, devices.get(x.id, [])) for x in leaders]})


@bp.patch("/leaders/<int:leader_id>")
@require("devices.write")
def update_leader(leader_id: int):
    try:
        body = _json()
        unknown = set(body) - {"full_name", "title", "unit", "role", "active"}
        if unknown:
            raise service.GatewayError(f"unknown field(s) {', '.join(sorted(unknown))}")
        if "active" in body and not isinstance(body["active"], bool):
            raise service.GatewayError("active must be true or false")
        with unit_of_work() as s:
            leader = s.get(Leader, leader_id)
            if leader is None:
                return error(404, "no such leader")
            service.update_leader(s, leader, **body)
            out = service.leader_dict(leader)
    except service.GatewayError as exc:
        return error(exc.status, str(exc))
    return jsonify(out)


# ------------------------------------------------------------------ assignment
@bp.put("/devices/<udid>/assignment")
@require("devices.write", unit_scoped=True)
def assign(udid: str):
    try:
        body = _json()
        leader_id = body.get("leader_id")
        if not isinstance(leader_id, int) or isinstance(leader_id, bool):
            raise service.GatewayError("leader_id (integer) is required")
        with unit_of_work() as s:
            device = device_for_request(s, udid)
            if device is None:
                return error(404, "no such device")
            leader = s.get(Leader, leader_id)
            if leader is None or (caller_unit_id() is not None and leader.unit_id != caller_unit_id()):
                return error(404, "no such leader")
            row = service.assign_device(s, device, leader, by=_by())
            out = service.assignment_dict(row, udid)
    except service.GatewayError as exc:
        return error(exc.status, str(exc))
    return jsonify(out)


@bp.get("/devices/<udid>/assignment")
@require("devices.write", unit_scoped=True)
def show_assignment(udid: str):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, "no such device")
        row = service.current_assignment(s, device.id)
        if row is None:
            return error(404, "device is not assigned")
        return jsonify(service.assignment_dict(row, udid))


@bp.delete("/devices/<udid>/assignment")
@require("devices.write", unit_scoped=True)
def unassign(udid: str):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, "no such device")
        row = service.unassign_device(s, device, by=_by())
        if row is None:
            return error(404, "device is not assigned")
        return jsonify(service.assignment_dict(row, udid))


# ------------------------------------------------------------------ documents
def _list_field(name: str) -> list[str]:
    values = []
    for raw in request.form.getlist(name):
        values += [v.strip() for v in raw.split(",") if v.strip()]
    return values


@bp.post("/documents")
@require("documents.admin")
def upload_document():
    """multipart/form-data: file (required), title, unit (owning unit code), classification
    (public/internal/confidential/secret), shared_units (codes, comma-separated), all_units
    (true/false), visible_roles (comma-separated). Size limit IPAD_MDM_DOCUMENT_MAX_BYTES
    (default 50 MiB); type decided by content (filetypes.py)."""
    inst = instance()
    limit = max_document_bytes(inst.settings)
    # Per request: the app-wide body limit (2 MiB) is sized for MDM messages, not documents.
    request.max_content_length = limit + 256 * 1024
    if request.content_length is not None and request.content_length > request.max_content_length:
        return error(413, f"document larger than {limit} bytes")
    try:
        upload = request.files.get("file")
        form = request.form
    except Exception as exc:  # RequestEntityTooLarge while streaming without Content-Length
        code = getattr(exc, "code", 400)
        return error(code if code in (400, 413) else 400, f"cannot read the upload: {getattr(exc, 'description', exc)}")
    if upload is None or not upload.filename:
        return error(400, "file is required (multipart field 'file')")
    try:
        with unit_of_work() as s:
            doc = service.store_document(
                s, current_app.extensions["document_gateway.store"], inst.settings.instance_dir, stream=upload.stream,
                filename=upload.filename, title=form.get("title", ""), unit=form.get("unit", ""),
                classification=form.get("classification", ""), uploaded_by=_by(), max_bytes=limit,
                shared_units=_list_field("shared_units"), all_units=form.get("all_units", "").lower() in ("1", "true", "yes"),
                visible_roles=_list_field("visible_roles"),
            )
            out = service.document_dict(doc, admin=True)
    except service.GatewayError as exc:
        return error(exc.status, str(exc))
    return jsonify(out), 201


@bp.get("/documents")
@require("documents.admin")
def list_documents():
    limit, offset = paging(max_limit=500)
    with unit_of_work() as s:
        stmt = select(Document)
        if request.args.get("classification"):
            stmt = stmt.where(Document.classification == request.args["classification"])
        if request.args.get("signature"):
            stmt = stmt.where(Document.signature_status == request.args["signature"])
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        docs = s.scalars(stmt.order_by(Document.id.desc()).limit(limit).offset(offset)).all()
        return jsonify({"total": total, "limit": limit, "offset": offset,
                        "documents": [service.document_dict(d, admin=True) for d in docs]})


@bp.get("/documents/<public_id>")
@require("documents.admin")
def show_document(public_id: str):
    with unit_of_work() as s:
        doc = s.scalar(select(Document).where(Document.public_id == public_id))
        if doc is None:
            return error(404, "no such document")
        return jsonify(service.document_dict(doc, admin=True))


@bp.delete("/documents/<public_id>")
@require("documents.admin")
def withdraw_document(public_id: str):
    with unit_of_work() as s:
        doc = s.scalar(select(Document).where(Document.public_id == public_id))
        if doc is None:
            return error(404, "no such document")
        if doc.withdrawn_at is None:
            from ipad_mdm.db import utcnow

            doc.withdrawn_at = utcnow()
        return jsonify(service.document_dict(doc, admin=True))


# ------------------------------------------------------------------ audit
def _when(name: str) -> dt.datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def audit_dict(row: GatewayAuditEvent) -> dict:
    return {c.name: (getattr(row, c.name).isoformat() if isinstance(getattr(row, c.name), dt.datetime)
                     else getattr(row, c.name)) for c in GatewayAuditEvent.__table__.columns}


@bp.get("/audit/gateway")
@require("audit.read")
def audit_events():
    """Filters: device (UDID), leader (id), decision (allow/deny), reason (code), since/until
    (ISO 8601; a date alone means midnight UTC). Paging: limit (≤ 500) and offset, newest first;
    or after_id for stable forward paging while new rows arrive."""
    try:
        since, until = _when("since"), _when("until")
    except ValueError:
        return error(400, "since/until must be ISO 8601 dates or times")
    limit, offset = paging(max_limit=500)
    with unit_of_work() as s:
        stmt = select(GatewayAuditEvent)
        if request.args.get("device"):
            stmt = stmt.where(GatewayAuditEvent.device_udid == request.args["device"])
        if request.args.get("leader"):
            leader = int_arg("leader")
            stmt = stmt.where(GatewayAuditEvent.leader_id == leader)
        if request.args.get("decision"):
            if request.args["decision"] not in ("allow", "deny"):
                return error(400, "decision must be allow or deny")
            stmt = stmt.where(GatewayAuditEvent.decision == request.args["decision"])
        if request.args.get("reason"):
            stmt = stmt.where(GatewayAuditEvent.reason_code == request.args["reason"])
        if since:
            stmt = stmt.where(GatewayAuditEvent.at >= since)
        if until:
            stmt = stmt.where(GatewayAuditEvent.at < until)
        total = s.scalar(select(func.count()).select_from(stmt.subquery()))
        after_id = int_arg("after_id")
        if after_id is not None:
            rows = s.scalars(stmt.where(GatewayAuditEvent.id > after_id).order_by(GatewayAuditEvent.id).limit(limit)).all()
        else:
            rows = s.scalars(stmt.order_by(GatewayAuditEvent.id.desc()).limit(limit).offset(offset)).all()
        return jsonify({"total": total, "limit": limit, "offset": offset, "events": [audit_dict(r) for r in rows]})


@bp.get("/audit/gateway/verify")
@require("audit.read")
def audit_verify():
    with unit_of_work() as s:
        return jsonify(audit.chain_status(s, instance()))
