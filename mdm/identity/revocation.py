"""Revocation and the CRL.

`revoke_identity` marks the row; every device endpoint refuses revoked identities at once.
`current_crl` serves a CRL built from every revoked, unexpired identity, re-signed only when
that set changes (whoever revoked it: this module, CheckOut, retirement, a takeover refusal)
or half its validity has passed; the CRLNumber is stored and only grows.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.outbox import publish

from .. import fastpath
from ..models import Device, IdentityCertificate
from .models import CrlState

log = logging.getLogger("mdm.identity")

# RFC 5280 5.3.1 reason names (stored as given; the CRL lists serial + date).
REVOCATION_REASONS = (
    "unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation",
    "certificateHold", "privilegeWithdrawn",
)
CRL_VALIDITY_HOURS = 24


class RevocationError(ValueError):
    pass


def revoke_identity(session: Session, cert: IdentityCertificate, reason: str = "unspecified") -> bool:
    """Revoke a device identity. Returns False if it was already revoked (the
    first revocation's date and reason stand: they are what relying parties saw)."""
    if reason not in REVOCATION_REASONS:
        raise RevocationError(f"reason must be one of {', '.join(REVOCATION_REASONS)}")
    if cert.revoked_at is not None:
        return False
    cert.revoked_at = utcnow()
    cert.revocation_reason = reason
    session.flush()
    fastpath.forget(session, fingerprint=cert.sha256_fingerprint)
    device = session.get(Device, cert.device_id) if cert.device_id is not None else None
    # Relying parties (the document system) end the device's sessions on this event.
    publish(session, "identity.revoked", {"udid": device.udid if device else None,
                                          "serial_number": (device.serial_number or "") if device else "",
                                          "certificate_serial": cert.serial, "reason": reason})
    log.warning("identity certificate %s (device #%s) revoked: %s", cert.serial, cert.device_id, reason)
    return True


def _revoked_entries(session: Session, now: dt.datetime) -> list[tuple[int, dt.datetime]]:
    # Expired certificates are left out (RFC 5280 allows it): no verifier accepts
    # them anyway, and the CRL would otherwise grow forever.
    rows = session.execute(
        select(IdentityCertificate.serial, IdentityCertificate.revoked_at)
        .where(IdentityCertificate.revoked_at.is_not(None), IdentityCertificate.not_after > now)
    ).all()
    # Second precision: that is what the CRL encodes, and it keeps the digest stable.
    return sorted((int(serial, 16), revoked_at.replace(microsecond=0)) for serial, revoked_at in rows)


def _digest(entries) -> str:
    h = hashlib.sha256()
    for serial, when in entries:
        h.update(f"{serial:x} {when.isoformat()}\n".encode())
    return h.hexdigest()


def current_crl(session: Session, ca, *, validity_hours: int = CRL_VALIDITY_HOURS) -> bytes:
    """The DER CRL, re-signed only when needed (signing may be a PKCS#11 round trip)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    now = utcnow()
    entries = _revoked_entries(session, now)
    digest = _digest(entries)
    state = session.get(CrlState, 1)
    if (state is not None and state.der and state.content_sha256 == digest and state.next_update is not None
            and state.next_update - now > dt.timedelta(hours=validity_hours / 2)):
        return state.der
    number = (state.number if state else 0) + 1
    crl = ca.build_crl(entries, next_update_hours=validity_hours, number=number)
    der = crl.public_bytes(Encoding.DER)
    values = dict(number=number, content_sha256=digest, der=der, this_update=crl.last_update_utc,
                  next_update=crl.next_update_utc)
    if state is None:
        try:
            with session.begin_nested():
                session.add(CrlState(id=1, **values))
        except IntegrityError:
            return _stored_crl(session)
        return der
    # Compare-and-set on the number: two workers rebuilding at once must not
    # publish two different CRLs under the same CRLNumber.
    claimed = session.execute(
        update(CrlState).where(CrlState.id == 1, CrlState.number == state.number).values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        return _stored_crl(session)
    session.expire(state)
    log.info("CRL #%d published with %d revoked identities", number, len(entries))
    return der


def _stored_crl(session: Session) -> bytes:
    session.expire_all()
    return session.get(CrlState, 1).der
