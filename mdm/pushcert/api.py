"""/api/v1/push-certificate: the push state (read: anyone who reads devices) and installing a renewed
certificate (IT administrators; the private key is taken, stored 0600, never returned)."""
from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify, request

from ipad_mdm.auth import require
from ipad_mdm.web import error, instance, unit_of_work

from . import service
from .certificate import PushCertificateRefused, TopicChangeRefused

log = logging.getLogger(__name__)
bp = Blueprint("pushcert_api", __name__, url_prefix="/api/v1")
MAX_PEM = 64 * 1024


@bp.get("/push-certificate")
@require("devices.read")
def show():
    with unit_of_work() as s:
        return jsonify(service.status(s, instance()))


@bp.post("/push-certificate")
@require("push.manage")
def install():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "request body must be a JSON object with certificate_pem and private_key_pem")
    cert_pem, key_pem = body.get("certificate_pem"), body.get("private_key_pem")
    confirm = body.get("confirm_topic_change", False)
    if not (isinstance(cert_pem, str) and isinstance(key_pem, str)) or not cert_pem or not key_pem:
        return error(400, "certificate_pem and private_key_pem are required PEM strings")
    if len(cert_pem) > MAX_PEM or len(key_pem) > MAX_PEM:
        return error(400, "PEM too long")
    if not isinstance(confirm, bool):
        return error(400, "confirm_topic_change must be true or false")
    try:
        with unit_of_work() as s:
            out = service.install_and_wake(s, instance(), cert_pem.encode(), key_pem.encode(), confirm=confirm,
                                           by=g.api_principal)
    except TopicChangeRefused as exc:
        return error(409, str(exc), code="topic_change_unconfirmed", enrolled_topics=exc.enrolled,
                     new_topic=exc.new_topic, error_vi=exc.vi)
    except PushCertificateRefused as exc:
        return error(400, str(exc), error_vi=exc.vi)
    return jsonify(out), 201
