"""Delivery runs: after every commit that published events (the dispatcher: Celery in
production, a thread on the embedded default) and every 30 seconds for what is due."""
from __future__ import annotations

from ipad_mdm.jobs import background_task, periodic
from ipad_mdm.outbox import OUTBOX_TASK


def run(rt) -> dict:
    from .service import deliver_due, fan_out

    db = rt.instance.database
    with db.session() as s:
        dispatched = fan_out(s)
    counts = deliver_due(db, rt.instance.fernet())
    return {"events": dispatched, **counts}


@background_task(OUTBOX_TASK)
def pump(rt) -> dict:
    return run(rt)


@periodic("webhooks.deliver_due", 30)
def deliver_due_job(rt) -> dict:
    return run(rt)


@periodic("webhooks.prune", 24 * 3600)
def prune_job(rt) -> dict:
    from .service import prune

    with rt.instance.database.session() as s:
        return {"deliveries_removed": prune(s)}
