"""Periodic work of the identity lifecycle."""
import logging

from ipad_mdm.jobs import periodic

log = logging.getLogger(__name__)


@periodic("mdm.renew_identities", 6 * 3600)
def renew_identities(rt) -> None:
    """Re-issue identities expiring within identity_renew_days (see mdm.identity.renewal)."""
    from .renewal import renew_expiring

    with rt.instance.database.session() as s:
        device_ids = renew_expiring(s, rt.instance)
    # Push only after commit: the device must find the command when it connects.
    if device_ids:
        rt.dispatcher.request_push(device_ids)


@periodic("mdm.refresh_crl", 3600)
def refresh_crl(rt) -> None:
    """Keep the stored CRL fresh even when nobody fetches it (next_update is 24 h)."""
    from .revocation import current_crl

    with rt.instance.database.session() as s:
        current_crl(s, rt.instance.ca)
