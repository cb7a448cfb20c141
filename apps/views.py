"""The manifest and the .ipa of an in-house release, at per-release URLs only the server can make
(an HMAC of the release with the instance secret): the iPad fetches them when it installs."""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, send_file

from ipad_mdm.web import error, instance, unit_of_work

from . import delivery, service
from .models import AppRelease

bp = Blueprint("apps_files", __name__)


def _release(s, release_id: int, token: str) -> AppRelease | None:
    release = s.get(AppRelease, release_id)
    if release is None or release.ipa_sha256 is None or release.state == "withdrawn":
        return None
    if not hmac.compare_digest(token.encode(), delivery.release_token(instance(), release).encode()):
        return None
    return release


@bp.get("/apps/<int:release_id>/<token>/manifest.plist")
def manifest(release_id, token):
    with unit_of_work() as s:
        release = _release(s, release_id, token)
        if release is None:
            return error(404, "no such app release")
        return Response(delivery.manifest(instance(), release), mimetype="application/xml",
                        headers={"Cache-Control": "no-store"})


@bp.get("/apps/<int:release_id>/<token>/app.ipa")
def ipa(release_id, token):
    with unit_of_work() as s:
        release = _release(s, release_id, token)
        if release is None:
            return error(404, "no such app release")
        path = service.ipa_path(instance(), release)
    return send_file(path, mimetype="application/octet-stream", conditional=True, max_age=0)
