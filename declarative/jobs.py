"""Background work of declarative management: telling many iPads to sync, in batches."""
from __future__ import annotations

import logging

from sqlalchemy import select

from ipad_mdm.dispatch import push_after_commit
from ipad_mdm.jobs import background_task, periodic
from mdm import Device

from . import sync

log = logging.getLogger(__name__)
BATCH = 200


@background_task(sync.SYNC_TASK)
def sync_devices(rt, device_ids, requested_by: str, force: bool = False) -> dict:
    renderer = rt.resource("declarative.renderer", lambda: sync.renderer_for(rt.instance))
    db = rt.instance.database
    with db.session() as s:
        stmt = select(Device.id).where(Device.enrollment_state == "enrolled", Device.ddm_enabled_at.is_not(None))
        if device_ids is not None:
            stmt = stmt.where(Device.id.in_(device_ids))
        ids = list(s.scalars(stmt.order_by(Device.id)))
    told = 0
    for start in range(0, len(ids), BATCH):
        with db.session(dispatcher=rt.dispatcher) as s:
            push = sync.request_sync(s, sync.devices_for(s, ids[start:start + BATCH]), renderer,
                                     requested_by=requested_by, force=force)
            push_after_commit(s, push)
            told += len(push)
    log.info("declarative sync: %d of %d iPads told to sync (%s)", told, len(ids), requested_by)
    return {"devices": len(ids), "told": told}


@periodic("declarative.schedule_os_updates", 6 * 3600)
def schedule_os_updates(rt) -> None:
    """iPads without declarative management still behind an enforced iPadOS version: ask again."""
    from .osupdate import schedule_updates

    with rt.instance.database.session(dispatcher=rt.dispatcher) as s:
        push = schedule_updates(s)
        push_after_commit(s, push)
