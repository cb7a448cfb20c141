"""What the server does for a new enrollment, off the iPad's request path and for many at once.

A first TokenUpdate completes an enrollment. The iPad's request records what the protocol needs
(the device row with its push token, the five inventory queries, `enrollment_completed_at`),
marks the device `provision_pending` and returns. What the other packages do for a new iPad
(`devices.enrolled`: its VPN peer and signed VPN profile, the first verdict, the handover record,
the gateway's access row, declarations, profiles, apps) runs here, in a background task that
takes every pending enrollment, BATCH devices per transaction, and then pushes the iPads it
queued commands for. The subscribers work set-based (a query per table for the batch, not per
iPad; one INSERT of each kind of row). An iPad waits for a push after its TokenUpdate anyway; that
one push brings it its inventory queries too (the TokenUpdate does not push by itself).

Why: that work was 42 % of an enrollment's CPU inside the iPad's request (19 instead of 33 ms
per iPad, in process), and a rollout of many iPads now shares one transaction per batch.

Nothing is lost: the mark is in the device's row, written with the TokenUpdate. The task is asked
for once that commits (with Celery, to start GATHER_SECONDS later, shared by the enrollments that
follow: dispatch.submit_soon); the periodic sweep runs it for marks a lost message left behind (broker
down, worker killed). A device is never provisioned twice: a pass claims marks with one UPDATE
(rows locked with SKIP LOCKED on PostgreSQL; SQLite has one writer at a time), and a pass that
fails rolls its claim back with everything else.
"""
from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ipad_mdm.db import after_commit_once, transaction_state
from ipad_mdm.dispatch import push_after_commit
from ipad_mdm.hooks import Hooks
from ipad_mdm.jobs import background_task, periodic

from .models import Device

log = logging.getLogger(__name__)

TASK = "mdm.provision_enrolled"
BATCH = 100
# With Celery, a pass starts this long after the TokenUpdate that asked for it and takes every
# enrollment since; a one-iPad pass costs the worker about twice what each iPad of a batch of 20 does.
# Two seconds is nothing next to an iPad's enrollment screens, and no push is due before the pass.
GATHER_SECONDS = 2.0
_REQUESTED = "mdm.provisioning.requested"


def mark(session: Session, device: Device, now) -> None:
    """A first TokenUpdate: the enrollment is complete, its provisioning still to run. The pass is
    asked for once the transaction commits (once per transaction)."""
    device.enrollment_completed_at = now
    device.provision_pending = True
    dispatcher = session.info.get("dispatcher")
    if dispatcher is None:
        return  # no dispatcher (a script): the periodic sweep provisions it
    after_commit_once(session, _REQUESTED, lambda: dispatcher.submit_soon(TASK, GATHER_SECONDS))


def requested(session: Session) -> bool:
    """Whether this transaction asked for a provisioning pass, which pushes the iPads it provisions:
    the request need not push them as well (one push brings an iPad its inventory queries and
    everything its provisioning queued)."""
    return transaction_state(session, _REQUESTED) is not None


def provision_pending(database, hooks: Hooks, dispatcher=None, *, batch: int = BATCH) -> dict:
    """Run `devices.enrolled` for every pending enrollment, `batch` devices per transaction.
    A batch that fails is redone device by device, so one broken device does not hold back the
    others; its mark stays (rolled back), and the next sweep tries it again. Returns counts."""
    counts = {"provisioned": 0, "failed": 0}
    broken: set[int] = set()
    size = batch
    while True:
        claimed: list[int] = []
        try:
            done = _pass(database, hooks, dispatcher, size, broken, claimed)
        except Exception:
            if size > 1:
                log.warning("provisioning a batch of %d new enrollments failed; provisioning them one by one",
                            len(claimed), exc_info=True)
                size = 1
                continue
            if not claimed:
                raise  # the claim itself failed (database down): the sweep runs again
            log.exception("provisioning the new enrollment of device %s failed; the periodic sweep tries again",
                          claimed[0])
            broken.add(claimed[0])
            counts["failed"] += 1
            continue
        counts["provisioned"] += done
        if done < size:
            return counts


def _pass(database, hooks: Hooks, dispatcher, size: int, skip: set[int], claimed: list[int]) -> int:
    session_kw = {"dispatcher": dispatcher} if dispatcher is not None else {}
    with database.session(**session_kw) as s:
        claimed.extend(_claim(s, size, skip))
        if not claimed:
            return 0
        devices = list(s.scalars(select(Device).where(Device.id.in_(claimed)).order_by(Device.id)))
        enrolled = [d for d in devices if d.enrollment_state == "enrolled"]  # not checked out or retired since
        if enrolled:
            outcomes = hooks.emit("devices.enrolled", session=s, devices=enrolled)
            failed = [o["subscriber"] for o in outcomes if o["status"] == "failed"]
            if failed and len(enrolled) > 1:
                # What failed for the batch (one iPad it cannot handle) was undone by its SAVEPOINT: one
                # iPad at a time, it fails for that iPad only, as it would in the iPad's own request.
                log.info("%s failed for a batch of %d new enrollments; running it device by device",
                         ", ".join(failed), len(enrolled))
                for device in enrolled:
                    hooks.emit_to("devices.enrolled", failed, session=s, devices=[device])
        push_after_commit(s, [d.id for d in devices if d.push_pending], dispatcher)
    return len(claimed)


def _claim(session: Session, size: int, skip: set[int]) -> list[int]:
    """Take up to `size` marks, oldest devices first, in one UPDATE … RETURNING; on PostgreSQL the
    rows another pass holds are skipped, not waited for."""
    pending = select(Device.id).where(Device.provision_pending)
    if skip:
        pending = pending.where(Device.id.not_in(skip))
    pending = pending.order_by(Device.id).limit(size)
    if session.get_bind().dialect.name == "postgresql":
        pending = pending.with_for_update(skip_locked=True)
    claim = (update(Device).where(Device.id.in_(pending))
             .values(provision_pending=False).returning(Device.id)
             .execution_options(synchronize_session=False))
    return sorted(session.scalars(claim))


@background_task(TASK)
def provision_enrolled(rt) -> dict:
    return provision_pending(rt.instance.database, rt.hooks, rt.dispatcher)


@periodic(TASK, 60)
def sweep(rt) -> dict:
    """Marks whose task was lost (the queue was down when their TokenUpdate committed)."""
    return provision_pending(rt.instance.database, rt.hooks, rt.dispatcher)
