"""Periodic work of the document gateway: the audit chain's integrity."""
import logging

from ipad_mdm.jobs import periodic

log = logging.getLogger(__name__)


@periodic("gateway.audit_checkpoint", 900)
def audit_checkpoint(rt) -> dict:
    """Verify the rows since the last signed checkpoint and sign a new one; alarm if damaged."""
    from . import audit

    status = audit.check_and_checkpoint(rt.instance.database, rt.instance)
    return status.as_dict()


@periodic("gateway.audit_full_verify", 24 * 3600)
def audit_full_verify(rt) -> dict:
    """Once a day the whole chain, so a row rewritten behind the newest checkpoint is found too."""
    from . import audit

    with rt.instance.database.session() as s:
        status = audit.full_check(s, rt.instance)
        if not status.ok:
            audit.raise_alarm(s, status, source="daily verification")
    return status.as_dict()
