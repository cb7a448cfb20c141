"""Asset data and legacy profiles fetched by the device (Authentication Type MDM): the caller is
identified by its MDM identity (Mdm-Signature or the TLS client certificate), and gets only what
is in its own declaration set."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from ipad_mdm.web import error, instance, unit_of_work
from mdm import DeviceAuthError, device_of_request

from . import sync

log = logging.getLogger(__name__)
bp = Blueprint("declarative_device", __name__)


def _serve(identifier: str, want: str):
    inst = instance()
    renderer = current_app.extensions["declarative.renderer"]
    try:
        with unit_of_work() as s:
            device = device_of_request(s, inst, request.headers, request.environ, request.get_data(cache=False))
            found = sync.device_set(s, device, renderer).declarations.get(identifier)
            if found is None or (want == "asset" and found.kind != "asset") or \
                    (want == "profile" and found.type != "com.apple.configuration.legacy"):
                return error(404, f"no {want} {identifier[:64]!r} for this device")
            decl = sync.by_identifier(s, identifier)
            if want == "asset":
                data, ctype = sync.asset_data(s, device, decl, renderer.credentials)
            else:
                from profiles import signed_current

                data = signed_current(s, inst, sync.current(decl).source["profile"])
                if data is None:
                    return error(404, "the configuration profile behind this declaration no longer exists")
                ctype = "application/x-apple-aspen-config"
            log.info("%s %s served to %s", want, identifier, device.udid)
            return Response(data, mimetype=ctype, headers={"Cache-Control": "no-store"})
    except DeviceAuthError as exc:
        return error(exc.status, exc.reason)


@bp.get("/mdm/ddm/asset/<identifier>")
def asset(identifier):
    return _serve(identifier, "asset")


@bp.get("/mdm/ddm/profile/<identifier>")
def profile(identifier):
    return _serve(identifier, "profile")
