"""HTTP endpoints devices talk to: enrollment profile, SCEP, check-in, connect."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import DBAPIError

from ipad_mdm.web import BodyTooLarge, error, hooks, instance, push_after_commit, read_body, unit_of_work
from ipad_mdm.mobileconfig import PayloadError, sign_profile

from . import checkin, ddm, enrollment, protocol

log = logging.getLogger(__name__)
bp = Blueprint("mdm", __name__)
# app.extensions key of the declarations provider (set by mdm.serve_declarations).
DECLARATIONS = "mdm.declarations"


@bp.get("/mdm/enroll")
def enroll():
    inst = instance()
    try:
        with unit_of_work() as s:
            token, challenge = enrollment.redeem_token(s, request.args.get("token"))
            profile = enrollment.build_enrollment_profile(
                urls=enrollment.EnrollmentURLs(inst.settings.base_url),
                topic=inst.push_topic,
                ca_cert=inst.ca.certificate,
                challenge=challenge,
                token=token,
                organization=inst.settings.organization,
                org_identifier=inst.settings.org_identifier,
            )
            signed = sign_profile(profile, inst.signer_cert, inst.signer_key, [inst.ca.certificate])
    except enrollment.EnrollmentRefused as exc:
        return error(403, exc.reason)
    except PayloadError as exc:
        # Misconfiguration (e.g. an http:// base URL): nothing was consumed (rolled back).
        return error(503, f"server cannot build a valid enrollment profile: {exc}", log_level=logging.ERROR)
    log.info("enrollment profile served for token #%s", token.id)
    return Response(
        signed,
        mimetype="application/x-apple-aspen-config",
        headers={"Content-Disposition": 'attachment; filename="enroll.mobileconfig"', "Cache-Control": "no-store"},
    )


@bp.get("/mdm/ca")
def ca_certificate():
    """The CA certificate, so a browser can trust the server before enrolling."""
    return Response(instance().ca.certificate_der, mimetype="application/x-x509-ca-cert",
                    headers={"Content-Disposition": 'attachment; filename="ipad-mdm-ca.cer"'})


def _identity(s, body: bytes):
    """Who is calling: Mdm-Signature first, else a client certificate from the proxy."""
    inst = instance()
    signature = request.headers.get("Mdm-Signature")
    if signature:
        cert = checkin.certificate_from_signature(body, signature)
    else:
        cert, _via_proxy = checkin.presented_certificate(request.headers, request.environ, inst.settings)
        if cert is None:
            raise checkin.DeviceAuthError(401, "request is not signed (Mdm-Signature missing)")
    return checkin.trusted_identity(s, inst.ca, cert)


def _device_endpoint(handler):
    try:
        body = read_body()
    except BodyTooLarge as exc:
        return error(413, str(exc))
    try:
        with unit_of_work() as s:
            identity = _identity(s, body)
            return handler(s, identity, body)
    except checkin.IdentityConflict as exc:
        # Nothing of the request was kept (rolled back); the refusal itself is recorded.
        with unit_of_work() as s:
            checkin.record_conflict(s, exc, source_ip=request.remote_addr)
        return error(exc.status, exc.reason)
    except checkin.DeviceAuthError as exc:
        return error(exc.status, exc.reason)
    except ddm.UnknownDeclaration as exc:
        return error(404, str(exc) or "unknown declaration")
    except protocol.ProtocolError as exc:
        return error(400, str(exc))
    except DBAPIError as exc:
        # Database briefly unreachable: nothing was committed; the device retries.
        log.error("database unavailable during %s: %s", request.path, type(exc.orig).__name__)
        resp = error(503, "database temporarily unavailable; retry later")
        resp.headers["Retry-After"] = "30"
        return resp
    except Exception:
        log.exception("device request failed")
        return error(500, "internal error", log_level=logging.ERROR)


@bp.put("/mdm/checkin")
def checkin_endpoint():
    def handle(s, identity, body):
        msg = protocol.parse_checkin(body, max_bytes=instance().settings.max_body_bytes)
        if isinstance(msg, protocol.DeclarativeManagement):
            answer = checkin.handle_declarative(s, hooks(), identity, msg, current_app.extensions.get(DECLARATIONS))
            log.info("declarative management %s from %s", msg.endpoint[:80], msg.udid)
            if answer is None:
                return Response(b"", status=200)
            return Response(ddm.dumps(answer), status=200, mimetype="application/json")
        checkin.handle_checkin(s, hooks(), identity, msg, seal=instance().fernet().encrypt)
        if isinstance(msg, protocol.TokenUpdate) and identity.device_id is not None:
            push_after_commit(s, identity.device_id)
        log.info("check-in %s from %s", msg.message_type, msg.udid)
        return Response(b"", status=200)

    return _device_endpoint(handle)


@bp.put("/mdm/connect")
def connect_endpoint():
    def handle(s, identity, body):
        response = protocol.parse_command_response(body, max_bytes=instance().settings.max_body_bytes)
        nxt = checkin.handle_connect(s, hooks(), identity, response)
        if nxt is None:
            return Response(b"", status=200)
        return Response(nxt, status=200, mimetype="application/xml")

    return _device_endpoint(handle)
