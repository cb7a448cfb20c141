"""HTTP face of Automated Device Enrollment.

Device (no credentials: the signed machine information is the credential)
  POST /mdm/ade/enroll                         signed machine info → the enrollment profile
IT administrators (API tokens)
  GET  /api/v1/ade/public-key                  devices.write   the certificate to upload in ABM (PEM)
  POST /api/v1/ade/tokens                      devices.write   the .p7m server token (body or multipart "token")
  GET  /api/v1/ade/tokens                      devices.read    tokens: server, organisation, expiry, warning
  POST /api/v1/ade/tokens/<id>/sync            devices.write   fetch / sync the iPads ABM assigned here
  POST /api/v1/ade/tokens/<id>/profile         devices.write   {department, support_phone, support_email}
  GET  /api/v1/ade/devices                     devices.read    the synced iPads (paging)
  PUT|DELETE /api/v1/ade/devices/profile       devices.write   {"devices": [serials]}: assign / remove at Apple
  GET  /api/v1/devices/<udid>/ade              devices.read    Await Configuration state
  POST /api/v1/devices/<udid>/ade/release      devices.write   send DeviceConfigured now
Office-wide tokens only: ABM holds the whole office's iPads.
"""
from __future__ import annotations

import logging
from cryptography.hazmat.primitives import serialization
from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import func, select

from ipad_mdm.auth import require
from ipad_mdm.web import (BodyTooLarge, error, hooks, instance, json_object, office_wide, paging, read_body,
                          unit_of_work)
from mdm import Device, EnrollmentRefused, service as mdm_service

from . import configure, enroll, service, token
from .models import AdeDevice, AdeToken

log = logging.getLogger("ade")
bp = Blueprint("ade", __name__)
ADE = "Automated Device Enrollment"


def _by() -> str:
    return getattr(g, "api_principal", "") or ""


# ------------------------------------------------------------------ the device
@bp.post("/mdm/ade/enroll")
def ade_enroll():
    inst = instance()
    try:
        body = read_body(enroll.MAX_BYTES)
    except BodyTooLarge:
        return error(413, "machine_info_too_large")
    try:
        info = enroll.read(body, enroll.load_anchors(service.device_ca_file(inst.settings)))
    except enroll.MachineInfoRefused as exc:
        return error(exc.status, exc.code, detail=str(exc))
    try:
        with unit_of_work() as s:
            expected = {}
            hooks().emit("device.expected", session=s, serial=info.serial, out=expected)
            synced = service.known_serial(s, info.serial)
            if synced is None and not expected.get("registered"):
                log.warning("ADE enrollment refused: serial %s is neither in ABM nor registered", info.serial)
                return error(403, "serial_unknown", detail="this iPad is not assigned to the office in Apple "
                                                           "Business Manager nor registered in the console")
            created = mdm_service.create_enrollment(s, inst.settings, serial_number=info.serial,
                                                    unit_code=expected.get("unit_code"),
                                                    created_by=f"{configure.ADE_TOKEN_PREFIX}{info.serial}")
            signed, row = mdm_service.signed_enrollment_profile(s, inst, created["token"])
    except EnrollmentRefused as exc:
        return error(403, "enrollment_refused", detail=exc.reason)
    log.info("ADE enrollment profile served to %s (%s, %s %s)", info.serial, info.udid, info.product, info.version)
    return Response(signed, mimetype="application/x-apple-aspen-config", headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------ IT administrators
@bp.get("/api/v1/ade/public-key")
@require("devices.write")
@office_wide(ADE)
def public_key():
    cert, _ = token.keypair(instance().settings.instance_dir)
    return Response(cert.public_bytes(serialization.Encoding.PEM), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="ipad-mdm-ade.pem"'})


def _fail(exc: service.AdeError):
    return error(exc.status, exc.code, detail=str(exc))


@bp.post("/api/v1/ade/tokens")
@require("devices.write")
@office_wide(ADE)
def upload_token():
    upload = request.files.get("token")
    try:
        data = upload.read(token.MAX_TOKEN_BYTES + 1) if upload is not None else read_body(token.MAX_TOKEN_BYTES)
    except BodyTooLarge:
        return error(413, "token_too_large")
    try:
        with unit_of_work() as s:
            row = service.add_token(s, instance(), data, by=_by())
            return jsonify(service.token_dict(row)), 201
    except service.AdeError as exc:
        return _fail(exc)


@bp.get("/api/v1/ade/tokens")
@require("devices.read")
@office_wide(ADE)
def list_tokens():
    with unit_of_work() as s:
        return jsonify({"tokens": service.tokens_with_counts(s)})


def _token(s, token_id: int) -> AdeToken | None:
    return s.get(AdeToken, token_id)


@bp.post("/api/v1/ade/tokens/<int:token_id>/sync")
@require("devices.write")
@office_wide(ADE)
def sync_token(token_id: int):
    try:
        with unit_of_work() as s:
            row = _token(s, token_id)
            if row is None:
                return error(404, "token_not_found")
            return jsonify(service.sync(s, instance(), hooks(), row))
    except service.AdeError as exc:
        return _fail(exc)


@bp.post("/api/v1/ade/tokens/<int:token_id>/profile")
@require("devices.write")
@office_wide(ADE)
def define_profile(token_id: int):
    data = json_object()
    try:
        with unit_of_work() as s:
            row = _token(s, token_id)
            if row is None:
                return error(404, "token_not_found")
            return jsonify(service.define_profile(
                s, instance(), row, department=data.get("department"), support_phone=data.get("support_phone"),
                support_email=data.get("support_email"), by=_by())), 201
    except service.AdeError as exc:
        return _fail(exc)


@bp.get("/api/v1/ade/devices")
@require("devices.read")
@office_wide(ADE)
def list_devices():
    limit, offset = paging()
    with unit_of_work() as s:
        q = select(AdeDevice).order_by(AdeDevice.serial_number)
        total = s.scalar(select(func.count()).select_from(AdeDevice))
        rows = s.scalars(q.limit(limit).offset(offset)).all()
        return jsonify({"total": total, "limit": limit, "offset": offset, "devices": [
            {"serial_number": d.serial_number, "model": d.model, "description": d.description, "os": d.os,
             "profile_status": d.profile_status, "profile_uuid": d.profile_uuid, "removed": d.removed_at is not None,
             "synced_at": d.synced_at.isoformat()} for d in rows]})


@bp.route("/api/v1/ade/devices/profile", methods=["PUT", "DELETE"])
@require("devices.write")
@office_wide(ADE)
def device_profiles():
    """{"devices": [serial, …]}: PUT assigns the enrollment profile at Apple, DELETE removes it."""
    data = json_object()
    serials = data.get("devices")
    if not isinstance(serials, list) or not serials or len(serials) > 1000 or \
            not all(isinstance(x, str) and 0 < len(x) <= 64 for x in serials):
        return error(400, "invalid_devices", detail="devices is a list of 1 to 1,000 serial numbers")
    try:
        with unit_of_work() as s:
            fn = service.assign_serials if request.method == "PUT" else service.unassign
            return jsonify({"devices": fn(s, instance(), serials)})
    except service.AdeError as exc:
        return _fail(exc)


def _device(s, udid: str):
    return s.scalar(select(Device).where(Device.udid == udid[:64]))


@bp.get("/api/v1/devices/<udid>/ade")
@require("devices.read")
@office_wide(ADE)
def device_state(udid: str):
    with unit_of_work() as s:
        device = _device(s, udid)
        if device is None:
            return error(404, "device_not_found")
        return jsonify({"udid": device.udid, "through_ade": configure.through_ade(s, device),
                        **configure.state(s, device)})


@bp.post("/api/v1/devices/<udid>/ade/release")
@require("devices.write")
@office_wide(ADE)
def release(udid: str):
    with unit_of_work() as s:
        device = _device(s, udid)
        if device is None:
            return error(404, "device_not_found")
        if not device.awaiting_configuration:
            return error(409, "not_awaiting_configuration")
        queued = configure.maybe_release(s, device, force=True, by=f"api:{_by()}")
        from ipad_mdm.dispatch import push_after_commit

        push_after_commit(s, [device.id])
    return jsonify({"released": queued}), 202 if queued else 200
