"""JSON API of the app catalog (/api/v1/apps): catalog, releases, acceptance, rollout, progress.

Catalog and rollout changes need "profiles.write" (IT staff) and an office-wide token; recording
an acceptance needs "apps.accept" (the officer who signs the acceptance minute). An .ipa is
uploaded as the raw request body (Content-Type application/octet-stream), streamed to disk under
IPAD_MDM_APP_MAX_BYTES, never held in memory.
"""
from __future__ import annotations

import functools

from flask import Blueprint, g, jsonify, request

from ipad_mdm.auth import require
from ipad_mdm.files import TooLarge, spool
from ipad_mdm.web import BadBody, error, instance, json_object, office_wide_only, unit_of_work

from . import delivery, service
from .service import AppError

bp = Blueprint("apps_api", __name__, url_prefix="/api/v1/apps")
max_upload_bytes = service.max_upload_bytes

def release_dict(r) -> dict:
    return {"version": r.version, "build": r.build, "state": r.state, "paused": r.paused, "ipa_sha256": r.ipa_sha256,
            "ipa_size": r.ipa_size, "team_id": r.team_id, "profile_name": r.profile_name,
            "profile_expires_at": r.profile_expires_at.isoformat() if r.profile_expires_at else None,
            "created_by": r.created_by, "created_at": r.created_at.isoformat(), "accepted_by": r.accepted_by,
            "accepted_at": r.accepted_at.isoformat() if r.accepted_at else None,
            "acceptance_sha256": r.acceptance_sha256, "acceptance_notes": r.acceptance_notes}


def app_dict(a) -> dict:
    return {"bundle_id": a.bundle_id, "name": a.name, "kind": a.kind, "app_store_id": a.app_store_id,
            "configuration": a.configuration, "accepted_version": service.accepted_version(a),
            "releases": [release_dict(r) for r in a.releases]}


def _run(fn):
    try:
        return fn()
    except BadBody as exc:
        return error(400, str(exc))
    except AppError as exc:
        return error(exc.status, exc.message, code=exc.code)
    except TooLarge as exc:
        return error(413, str(exc))


def _write(view):
    @functools.wraps(view)
    def inner(*args, **kwargs):
        return office_wide_only("app catalog changes") or _run(lambda: view(*args, **kwargs))
    return inner


def _rollout(s) -> dict:
    return delivery.rollout(s, instance(), requested_by=g.api_principal)


@bp.get("")
@require("devices.read")
def list_apps():
    from sqlalchemy import select

    from .models import App

    with unit_of_work() as s:
        return jsonify({"apps": [app_dict(a) for a in s.scalars(select(App).order_by(App.bundle_id))]})


@bp.post("")
@require("profiles.write")
@_write
def create_app():
    body = json_object()
    with unit_of_work() as s:
        app = service.create_app(s, bundle_id=body.get("bundle_id"), name=body.get("name"), kind=body.get("kind"),
                                 app_store_id=body.get("app_store_id"), configuration=body.get("configuration"),
                                 created_by=g.api_principal)
        return jsonify(app_dict(app)), 201


@bp.get("/<bundle_id>")
@require("devices.read")
def show_app(bundle_id):
    def run():
        with unit_of_work() as s:
            return jsonify(app_dict(service.get_app(s, bundle_id)))
    return _run(run)


@bp.post("/<bundle_id>/releases")
@require("profiles.write")
@_write
def add_release(bundle_id):
    limit = max_upload_bytes()
    if request.mimetype == "application/json":
        body = json_object()
        with unit_of_work() as s:
            app = service.get_app(s, bundle_id)
            release = service.add_store_release(s, app, body.get("version"), created_by=g.api_principal)
            return jsonify({**release_dict(release), **_rollout(s)}), 201
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"the upload is larger than {limit} bytes")
    request.max_content_length = limit  # the app-wide request limit is for check-ins, not app files
    with unit_of_work() as s:
        service.get_app(s, bundle_id)  # 404 before reading a byte of an upload for no app
    upload, _digest, size = spool(request.stream, service.app_dir(instance()) / "incoming", limit)
    if size == 0:
        upload.unlink(missing_ok=True)
        return error(400, "empty upload: send the .ipa as the request body")
    with unit_of_work() as s:
        app = service.get_app(s, bundle_id)
        release = service.add_inhouse_release(s, instance(), app, upload, created_by=g.api_principal)
        return jsonify({**release_dict(release), **_rollout(s)}), 201


@bp.post("/<bundle_id>/releases/<version>/accept")
@require("apps.accept")
@_write
def accept(bundle_id, version):
    minute = request.files.get("minute")
    if minute is None:
        return error(400, "attach the acceptance minute as the file field 'minute'")
    data = minute.read(20 * 1024 * 1024 + 1)
    if len(data) > 20 * 1024 * 1024:
        return error(413, "the acceptance minute is larger than 20 MiB")
    with unit_of_work() as s:
        release = service.get_release(service.get_app(s, bundle_id), version)
        service.accept(s, instance(), release, by=g.api_principal, minute=data, filename=minute.filename or "",
                       notes=request.form.get("notes"))
        return jsonify({**release_dict(release), **_rollout(s)})


@bp.post("/<bundle_id>/releases/<version>/<action>")
@require("profiles.write")
@_write
def rollout_action(bundle_id, version, action):
    if action not in ("pause", "resume", "withdraw"):
        return error(404, "unknown action; use pause, resume or withdraw")
    with unit_of_work() as s:
        release = service.get_release(service.get_app(s, bundle_id), version)
        previous = None
        if action == "withdraw":
            previous = service.withdraw(release)
        else:
            service.set_paused(release, action == "pause")
        out = {**release_dict(release), **_rollout(s)}
        if action == "withdraw":
            out["rolled_back_to"] = previous.version if previous else None
        return jsonify(out)


@bp.get("/<bundle_id>/progress")
@require("devices.read")
def progress(bundle_id):
    def run():
        with unit_of_work() as s:
            return jsonify(delivery.progress(s, service.get_app(s, bundle_id)))
    return _run(run)
