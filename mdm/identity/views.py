"""HTTP side of the identity lifecycle: the CRL and the revoke action."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, g, request
from sqlalchemy import select

from ipad_mdm.auth import require
from ipad_mdm.web import error, instance, unit_of_work

from ..models import IdentityCertificate
from ..scope import caller_unit_id, in_scope
from ..service import identity_summary
from . import revocation

log = logging.getLogger(__name__)
bp = Blueprint("mdm_certificates", __name__)


@bp.get("/scep/crl")
def crl():
    """DER CRL of revoked device identities (public, like any CRL distribution point)."""
    with unit_of_work() as s:
        der = revocation.current_crl(s, instance().ca)
    # Relying parties may cache briefly; a revocation shows up on the next fetch.
    return Response(der, mimetype="application/pkix-crl",
                    headers={"Cache-Control": "public, max-age=300",
                             "Content-Disposition": 'attachment; filename="ipad-mdm.crl"'})


@bp.post("/api/v1/identities/<serial>/revoke")
@require("commands.destructive", unit_scoped=True)
def revoke(serial):
    # Revoking cuts the device off from MDM, hence the destructive-command permission.
    body = request.get_json(silent=True) or {}
    reason = body.get("reason", "unspecified") if isinstance(body, dict) else None
    if not isinstance(reason, str):
        return error(400, "reason must be a string")
    with unit_of_work() as s:
        cert = s.scalar(select(IdentityCertificate).where(IdentityCertificate.serial == serial.lower()))
        if cert is None or (caller_unit_id() is not None and not in_scope(cert.device)):
            return error(404, f"unknown identity certificate {serial}")
        try:
            changed = revocation.revoke_identity(s, cert, reason)
        except revocation.RevocationError as exc:
            return error(400, str(exc))
        if changed:
            log.warning("identity %s revoked by %s (%s)", cert.serial, g.api_principal, reason)
        return {"identity": identity_summary(cert), "changed": changed}
