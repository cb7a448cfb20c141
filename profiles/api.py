"""JSON API for configuration profiles (/api/v1/profiles): a thin layer over service.

Writes need "profiles.write" and an office-wide token: a rollout can reach
devices of every unit, so a unit-scoped token may read but not change profiles.
"""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from sqlalchemy.exc import IntegrityError

from ipad_mdm.auth import require
from ipad_mdm.web import (BadBody, error, instance, json_object, office_wide_only, push_after_commit,
                          unit_of_work)
from mdm import CommandRefused
from mdm import ProtocolError

from ipad_mdm import mobileconfig as pl
from . import drift, serialize, service

bp = Blueprint("profiles_api", __name__, url_prefix="/api/v1/profiles")


def _office_wide():
    return office_wide_only("profile changes")


def _run(fn):
    """Map service exceptions to HTTP answers in one place."""
    try:
        return fn()
    except BadBody as exc:
        return error(400, str(exc))
    except pl.PayloadError as exc:
        return error(400, exc.message, key=exc.key)
    except (service.InvalidRequest, ProtocolError, CommandRefused) as exc:
        return error(400, str(exc))
    except service.NotFound as exc:
        return error(404, str(exc))
    except service.Conflict as exc:
        return error(409, str(exc))
    except IntegrityError:
        # Two concurrent requests raced on a unique key; the other one won.
        return error(409, "conflicting concurrent change; retry")
    except service.ProfileIntegrityError as exc:
        return error(409, str(exc))


def _push(session, queued) -> None:
    for q in queued:
        push_after_commit(session, q.device.id)


@bp.post("")
@require("profiles.write")
def create_profile():
    denied = _office_wide()
    if denied:
        return denied

    def run():
        body = json_object()
        with unit_of_work() as s:
            profile = service.create_profile(
                s, instance().settings, identifier=body.get("identifier"), display_name=body.get("display_name"),
                description=body.get("description"), payloads=body.get("payloads"),
                removal_disallowed=body.get("removal_disallowed", False), created_by=g.api_principal,
            )
            return jsonify(serialize.profile_detail(s, profile)), 201

    return _run(run)


@bp.get("")
@require("devices.read")
def list_profiles():
    with unit_of_work() as s:
        return jsonify({"profiles": [serialize.profile_summary(p) for p in service.list_profiles(s)]})


@bp.get("/drift")
@require("devices.read")
def list_drift():
    def run():
        open_only = request.args.get("open", "true").lower() not in ("0", "false", "no")
        with unit_of_work() as s:
            device = None
            if request.args.get("udid"):
                device = service._device_by_udid(s, request.args["udid"])
            rows = drift.list_drift(s, open_only=open_only, device=device, unit_id=g.api_unit_id)
            return jsonify({"drift": [serialize.drift_dict(d, dev) for d, dev in rows]})

    return _run(run)


@bp.get("/<identifier>")
@require("devices.read")
def show_profile(identifier):
    def run():
        with unit_of_work() as s:
            return jsonify(serialize.profile_detail(s, service.get_profile(s, identifier)))

    return _run(run)


@bp.post("/<identifier>/versions")
@require("profiles.write")
def create_version(identifier):
    denied = _office_wide()
    if denied:
        return denied

    def run():
        body = json_object()
        with unit_of_work() as s:
            profile = service.get_profile(s, identifier)
            version = service.new_version(
                s, instance().settings, profile, payloads=body.get("payloads"),
                display_name=body.get("display_name"), description=body.get("description"),
                removal_disallowed=body.get("removal_disallowed"), created_by=g.api_principal,
            )
            return jsonify(serialize.version_dict(version)), 201

    return _run(run)


@bp.post("/<identifier>/assignments")
@require("profiles.write")
def assign(identifier):
    denied = _office_wide()
    if denied:
        return denied

    def run():
        body = json_object()
        with unit_of_work() as s:
            profile = service.get_profile(s, identifier)
            service.assign(s, profile, devices=body.get("devices", []), units=body.get("units", []),
                           all_devices=body.get("all", False), created_by=g.api_principal)
            return jsonify({"assignments": [serialize.assignment_dict(s, a) for a in profile.assignments]})

    return _run(run)


@bp.post("/<identifier>/install")
@require("profiles.write")
def install(identifier):
    denied = _office_wide()
    if denied:
        return denied

    def run():
        body = json_object() if request.data else {}
        version, force = body.get("version"), body.get("force", False)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise service.InvalidRequest("version must be an integer")
        if not isinstance(force, bool):
            raise service.InvalidRequest("force must be a boolean")
        with unit_of_work() as s:
            profile = service.get_profile(s, identifier)
            queued = service.install(s, instance(), profile, version=version, force=force,
                                     requested_by=g.api_principal)
            _push(s, queued)
            return jsonify({"version": profile.current_version, "queued": [q.as_dict() for q in queued]}), 202

    return _run(run)


@bp.post("/<identifier>/remove")
@require("profiles.write")
def remove(identifier):
    denied = _office_wide()
    if denied:
        return denied

    def run():
        body = json_object() if request.data else {}
        with unit_of_work() as s:
            profile = service.get_profile(s, identifier)
            queued = service.remove(s, profile, devices=body.get("devices"), requested_by=g.api_principal)
            _push(s, queued)
            return jsonify({"queued": [q.as_dict() for q in queued]}), 202

    return _run(run)


@bp.get("/<identifier>/installations")
@require("devices.read")
def list_installations(identifier):
    def run():
        with unit_of_work() as s:
            profile = service.get_profile(s, identifier)
            rows = service.installations(s, profile=profile)
            items = [serialize.installation_dict(s, r) for r in rows]
            if g.api_unit_id is not None:
                from mdm import Device

                allowed = {r.device_id for r in rows if (d := s.get(Device, r.device_id)) and d.unit_id == g.api_unit_id}
                items = [i for r, i in zip(rows, items) if r.device_id in allowed]
            return jsonify({"installations": items})

    return _run(run)
