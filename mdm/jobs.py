"""Periodic MDM work: retry failed pushes."""
from ipad_mdm.jobs import periodic

from .push import due_for_retry


@periodic("mdm.retry_pushes", 30)
def retry_pushes(rt) -> None:
    ids = due_for_retry(rt.instance.database)
    if ids:
        rt.dispatcher.request_push(ids)
