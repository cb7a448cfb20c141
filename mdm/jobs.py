"""Periodic MDM work: retry failed pushes."""
from ipad_mdm.jobs import periodic

from .push import due_for_retry


@periodic("mdm.retry_pushes", 30)
def retry_pushes(instance, dispatcher) -> None:
    ids = due_for_retry(instance.database)
    if ids:
        dispatcher.request_push(ids)
