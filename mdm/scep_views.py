"""The /scep endpoint: device identity certificates from the project's CA."""
from __future__ import annotations

import logging

from cryptography.hazmat.primitives import hashes
from flask import Blueprint, Response, request
from sqlalchemy import select

from ipad_mdm.db import utcnow
from ipad_mdm.web import BodyTooLarge, error, hooks, instance, read_body, unit_of_work

from . import enrollment, scep
from .models import IdentityCertificate

log = logging.getLogger(__name__)
bp = Blueprint("scep", __name__)

PKI_MESSAGE = "application/x-pki-message"


@bp.route("/scep", methods=["GET", "POST"])
def scep_endpoint():
    operation = request.args.get("operation", "")
    inst = instance()
    if operation == "GetCACaps":
        return Response(scep.CA_CAPS, mimetype="text/plain")
    if operation == "GetCACert":
        body, content_type = scep.get_ca_cert_response(inst.ca)
        return Response(body, content_type=content_type)
    if operation != "PKIOperation":
        return error(400, f"unsupported SCEP operation {operation[:40]!r}")
    try:
        if request.method == "POST":
            der = read_body(scep.MAX_MESSAGE_BYTES)
        else:
            der = scep.decode_get_message(request.args.get("message", ""))
    except BodyTooLarge as exc:
        return error(413, str(exc))
    except scep.SCEPError as exc:
        return error(400, f"SCEP: {exc}")
    try:
        req = scep.parse_pki_message(der, inst.ca)
    except scep.SCEPError as exc:
        if exc.header is None:
            return error(400, f"SCEP: {exc}")
        log.warning("SCEP request refused (%s): %s", exc.fail_info, exc)
        return _pki(scep.build_failure(exc.header, inst.ca, exc.fail_info))
    try:
        with unit_of_work() as s:
            reply = _issue(s, req)
    except enrollment.ScepRefused as exc:
        log.warning("SCEP %s refused: %s", req.message_type, exc.reason)
        return _pki(scep.build_failure(req, inst.ca, "badRequest"))
    return _pki(reply)


def _pki(body: bytes) -> Response:
    return Response(body, content_type=PKI_MESSAGE)


def _issue(s, req: scep.PKIRequest) -> bytes:
    inst = instance()
    settings = inst.settings
    if req.message_type == "PKCSReq":
        token = enrollment.consume_challenge(s, req.challenge)
        subject = enrollment.identity_subject(token, settings.organization)
        cert = inst.ca.issue_device_identity(subject, req.csr.public_key(), settings.identity_cert_days)
        row = enrollment.record_identity(s, cert, token.id)
        hooks().emit("identity.issued", session=s, identity=row, token=token)
        log.info("issued identity certificate %s for enrollment #%s", row.serial, token.id)
        return scep.build_cert_rep(req, inst.ca, cert)
    if req.message_type == "RenewalReq":
        old = _renewable_identity(s, req)
        cert = inst.ca.issue_device_identity(req.signer_cert.subject, req.csr.public_key(), settings.identity_cert_days)
        row = enrollment.record_identity(s, cert, old.enrollment_token_id, old.device_id)
        log.info("renewed identity certificate %s -> %s", old.serial, row.serial)
        return scep.build_cert_rep(req, inst.ca, cert)
    raise enrollment.ScepRefused(f"unsupported messageType {req.message_type}")


def _renewable_identity(s, req: scep.PKIRequest) -> IdentityCertificate:
    """A renewal is signed with the current identity: it must be ours and valid."""
    if not req.signer_issued_by_ca:
        raise enrollment.ScepRefused("renewal not signed by an identity from this CA")
    fp = req.signer_cert.fingerprint(hashes.SHA256()).hex()
    old = s.scalar(select(IdentityCertificate).where(IdentityCertificate.sha256_fingerprint == fp))
    now = utcnow()
    if old is None or old.revoked_at is not None or not old.not_before <= now <= old.not_after:
        raise enrollment.ScepRefused("renewal signer is unknown, revoked or expired")
    if old.device_id is None:
        raise enrollment.ScepRefused("identity was never bound to a device")
    return old
