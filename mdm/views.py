"""HTTP endpoints devices talk to: enrollment profile, SCEP, check-in, connect."""
from __future__ import annotations

import logging

from cryptography.hazmat.primitives import hashes
from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import DBAPIError

from ipad_mdm.web import BodyTooLarge, dispatcher, error, hooks, instance, push_after_commit, read_body, unit_of_work
from ipad_mdm.mobileconfig import PayloadError

from . import checkin, ddm, enrollment, fastpath, protocol, provisioning, service
from . import commands as command_queue

log = logging.getLogger(__name__)
bp = Blueprint("mdm", __name__)
# app.extensions key of the declarations provider (set by mdm.serve_declarations).
DECLARATIONS = "mdm.declarations"


@bp.get("/mdm/enroll")
def enroll():
    inst = instance()
    try:
        with unit_of_work() as s:
            signed, token = service.signed_enrollment_profile(s, inst, request.args.get("token"))
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


def _signer(body: bytes):
    """Who signed the request: Mdm-Signature first, else a client certificate from the proxy."""
    signature = request.headers.get("Mdm-Signature")
    if signature:
        return (checkin.verified_signer(request.environ, body, signature)
                or checkin.certificate_from_signature(body, signature))
    cert, _via_proxy = checkin.presented_certificate(request.headers, request.environ, instance().settings)
    if cert is None:
        raise checkin.DeviceAuthError(401, "request is not signed (Mdm-Signature missing)")
    return cert


def _device_endpoint(handler, fast=None):
    """Run `handler(session, identity, body, cert)` in one transaction; `fast(body, cert)` may
    answer first without one (the idle fast path) by returning a response instead of None."""
    try:
        body = read_body()
    except BodyTooLarge as exc:
        return error(413, str(exc))
    try:
        cert = _signer(body)
        if fast is not None and not request.environ.get(checkin.IDLE_TRIED):
            answered = fast(body, cert)
            if answered is not None:
                return answered
        with unit_of_work() as s:
            identity = checkin.trusted_identity(s, instance().ca, cert)
            return handler(s, identity, body, cert)
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
    def handle(s, identity, body, _cert):
        msg = protocol.parse_checkin(body, max_bytes=instance().settings.max_body_bytes)
        if isinstance(msg, protocol.DeclarativeManagement):
            answer = checkin.handle_declarative(s, hooks(), identity, msg, current_app.extensions.get(DECLARATIONS))
            log.info("declarative management %s from %s", msg.endpoint[:80], msg.udid)
            if answer is None:
                return Response(b"", status=200)
            return Response(ddm.dumps(answer), status=200, mimetype="application/json")
        checkin.handle_checkin(s, hooks(), identity, msg, seal=instance().fernet().encrypt)
        if isinstance(msg, protocol.TokenUpdate) and identity.device_id is not None and not provisioning.requested(s):
            push_after_commit(s, identity.device_id)
        log.info("check-in %s from %s", msg.message_type, msg.udid)
        return Response(b"", status=200)

    return _device_endpoint(handle)


def answered_idle(inst, body: bytes, cert, wake=None) -> bool:
    """The idle fast path's whole decision, for the view below and for IdleConnectWSGI in front of
    Flask: True when this signed Idle of a known, current identity found nothing waiting (answered
    with an empty 200). False: the full path decides, from scratch. `wake(device_ids)` pushes
    devices (mdm.quiet uses it)."""
    database = inst.database
    cache = fastpath.cache_for(database.engine)
    if not cache.preloaded:
        fastpath.preload(database, cache)
    try:
        response = protocol.parse_command_response(body, max_bytes=inst.settings.max_body_bytes)
    except protocol.ProtocolError:
        return False  # the full path decides (who is asking comes before what is wrong)
    if response.status != "Idle":
        return False
    known = cache.get(_fingerprint(cert))
    if known is None or known.udid != response.udid:
        return False
    return fastpath.idle_without_command(database, known, resend_after=command_queue.RESEND_AFTER, wake=wake)


@bp.put("/mdm/connect")
def connect_endpoint():
    inst = instance()
    cache = fastpath.cache_for(inst.database.engine)

    def idle(body, cert):
        return Response(b"", status=200) if answered_idle(inst, body, cert, dispatcher().request_push) else None

    def handle(s, identity, body, cert):
        response = protocol.parse_command_response(body, max_bytes=instance().settings.max_body_bytes)
        nxt = checkin.handle_connect(s, hooks(), identity, response)
        # handle_connect accepted this identity as the device's current one: later Idles may go fast.
        cache.put(_fingerprint(cert), fastpath.KnownIdentity(identity.id, identity.device_id, response.udid,
                                                             identity.not_before, identity.not_after))
        if nxt is None:
            return Response(b"", status=200)
        return Response(nxt, status=200, mimetype="application/xml")

    return _device_endpoint(handle, fast=idle)


def _fingerprint(cert) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()
