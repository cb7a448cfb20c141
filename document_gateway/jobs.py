"""Periodic work of the document gateway: the audit chain's integrity."""
import logging

from ipad_mdm.jobs import periodic

log = logging.getLogger(__name__)


@periodic("gateway.audit_checkpoint", 900)
def audit_checkpoint(instance, dispatcher) -> dict:
    """Verify the rows since the last signed checkpoint and sign a new one; alarm if damaged."""
    from . import audit

    status = audit.check_and_checkpoint(instance.database, instance)
    return status.as_dict()


@periodic("gateway.audit_full_verify", 24 * 3600)
def audit_full_verify(instance, dispatcher) -> dict:
    """Once a day the whole chain, so a row rewritten behind the newest checkpoint is found too."""
    from . import audit

    with instance.database.session() as s:
        status = audit.full_check(s, instance)
        if not status.ok:
            audit.raise_alarm(s, status, source="daily verification")
    return status.as_dict()
