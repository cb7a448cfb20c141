"""The /scep endpoint: device identity certificates from the project's CA."""
from __future__ import annotations

import logging

from cryptography.hazmat.primitives import hashes
from flask import Blueprint, Response, request
from sqlalchemy import select

from ipad_mdm.db import utcnow
from ipad_mdm.web import BodyTooLarge, error, hooks, instance, read_body, unit_of_work

from . import enrollment, scep
from .models import Device, IdentityCertificate

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
        # The CA and the RA (its certificate, keyEncipherment): iPads encrypt their request to the RA.
        body, content_type = scep.get_ca_cert_response(inst.ca, [inst.scep_ra.certificate] if inst.scep_ra else None)
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
        req = scep.parse_pki_message(der, inst.ca, inst.scep_ra)
    except scep.SCEPError as exc:
        if exc.header is None:
            return error(400, f"SCEP: {exc}")
        log.warning("SCEP request refused (%s): %s", exc.fail_info, exc)
        return _pki(scep.build_failure(exc.header, inst.ca, exc.fail_info, inst.scep_ra))
    try:
        with unit_of_work() as s:
            reply = _issue(s, req)
    except enrollment.ScepRefused as exc:
        log.warning("SCEP %s refused: %s", req.message_type, exc.reason)
        if isinstance(exc, RenewalRefused):
            with unit_of_work() as s:
                exc.record(s, request.remote_addr)
        return _pki(scep.build_failure(req, inst.ca, "badRequest", inst.scep_ra))
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
        return scep.build_cert_rep(req, inst.ca, cert, ra=inst.scep_ra)
    if req.message_type == "RenewalReq":
        old = _renewable_identity(s, req)
        cert = inst.ca.issue_device_identity(req.signer_cert.subject, req.csr.public_key(), settings.identity_cert_days)
        row = enrollment.record_identity(s, cert, old.enrollment_token_id, old.device_id)
        log.info("renewed identity certificate %s -> %s", old.serial, row.serial)
        return scep.build_cert_rep(req, inst.ca, cert, ra=inst.scep_ra)
    raise enrollment.ScepRefused(f"unsupported messageType {req.message_type}")


class RenewalRefused(enrollment.ScepRefused):
    """A renewal by a device's own identity that must not happen (superseded, or one already in
    flight): refused and recorded as a security event (a device repeating renewals to collect
    valid certificates is what an attacker holding one identity would do)."""

    def __init__(self, reason: str, old: IdentityCertificate):
        super().__init__(reason)
        self.serial, self.device_id, self.udid = old.serial, old.device_id, old.device.udid if old.device else None

    def record(self, session, source_ip) -> None:
        from ipad_mdm import security_events

        security_events.record(
            session, "identity_renewal_refused", udid=self.udid, device_id=self.device_id, source_ip=source_ip,
            summary_vi=f"Yêu cầu gia hạn (SCEP RenewalReq) ký bằng chứng thư số số sê-ri {self.serial} bị từ chối: "
                       + ("chứng thư số đã được thay thế." if "superseded" in self.reason
                          else "đã có một chứng thư số mới chưa được thiết bị sử dụng."),
            summary_en=f"SCEP RenewalReq signed by certificate serial {self.serial} refused: {self.reason}.",
            details={"certificate_serial": self.serial, "reason": self.reason, "key": self.serial}, dedupe=True)


def _renewable_identity(s, req: scep.PKIRequest) -> IdentityCertificate:
    """A renewal is signed with the device's current identity: ours, valid, not superseded, and
    with no newer identity of the same device still waiting to be used (one renewal in flight)."""
    if not req.signer_issued_by_ca:
        raise enrollment.ScepRefused("renewal not signed by an identity from this CA")
    fp = req.signer_cert.fingerprint(hashes.SHA256()).hex()
    old = s.scalar(select(IdentityCertificate).where(IdentityCertificate.sha256_fingerprint == fp))
    now = utcnow()
    if old is None or old.revoked_at is not None or not old.not_before <= now <= old.not_after:
        raise enrollment.ScepRefused("renewal signer is unknown, revoked or expired")
    if old.device_id is None:
        raise enrollment.ScepRefused("identity was never bound to a device")
    device = s.get(Device, old.device_id)
    if device.current_identity_id is not None and old.id < device.current_identity_id:
        raise RenewalRefused("the signing identity has been superseded", old)
    newer = s.scalar(select(IdentityCertificate.id).where(
        IdentityCertificate.device_id == old.device_id, IdentityCertificate.id > old.id,
        IdentityCertificate.revoked_at.is_(None)).limit(1))
    if newer is not None:
        raise RenewalRefused("a renewed identity was already issued and is not in use yet", old)
    return old
