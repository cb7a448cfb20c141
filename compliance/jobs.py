"""Periodic and background compliance work (Celery or the embedded runner; both pass the
process's Runtime: instance, hooks, dispatcher)."""
from __future__ import annotations

import datetime as dt
import logging

from ipad_mdm.jobs import background_task, periodic

from . import engine

log = logging.getLogger("compliance.jobs")


def _when(now_iso: str | None) -> dt.datetime | None:
    if not now_iso:
        return None
    value = dt.datetime.fromisoformat(now_iso)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@periodic("compliance.evaluate_all", 300)
def evaluate_all(rt, now_iso: str | None = None) -> dict:
    """Re-evaluate every enrolled device: deadlines pass and silent devices go
    non-compliant without any message from the device."""
    counts = engine.evaluate_all(rt.instance.database, rt.hooks, _when(now_iso), dispatcher=rt.dispatcher)
    push_ids = counts.pop("push_device_ids", [])
    if push_ids:
        # After commit (evaluate_all commits per batch): DeviceLock / EnableLostMode are waiting.
        rt.dispatcher.request_push(push_ids)
    if counts["transitions"] or counts["errors"]:
        log.info("compliance.evaluate_all: %s", counts)
    return counts


background_task("compliance.evaluate_all")(evaluate_all)


@periodic("compliance.request_inventory", 3600)
def request_inventory(rt) -> list[int]:
    """Ask devices whose inventory is older than IPAD_MDM_INVENTORY_INTERVAL_HOURS for a fresh one."""
    ids = engine.request_stale_inventory(rt.instance.database,
                                         interval_hours=engine.inventory_interval_hours(rt.instance))
    if ids:
        rt.dispatcher.request_push(ids)
        log.info("compliance.request_inventory: queued inventory for %d device(s)", len(ids))
    return ids


background_task("compliance.request_inventory")(request_inventory)


@background_task("compliance.evaluate_device")
def evaluate_device(rt, device_id: int, now_iso: str | None = None) -> dict:
    """Evaluate one device; returns {"device_id", "state", "transitions"}."""
    from mdm import Device

    with rt.instance.database.session(dispatcher=rt.dispatcher) as s:
        device = s.get(Device, device_id)
        if device is None:
            return {"device_id": device_id, "state": None, "transitions": 0}
        res = engine.evaluate_device(s, rt.hooks, device, _when(now_iso), trigger="task")
    if res.push_needed:
        rt.dispatcher.request_push([device_id])
    return {"device_id": device_id, "state": res.state, "transitions": [t.to_state for t in res.transitions]}


@periodic("compliance.retry_actions", 60)
def retry_actions(rt) -> dict:
    """Re-run the actions of a transition that failed (a VPN cut that could not be applied, …)
    while the device is still in that state; write the new outcome into the transition row."""
    from sqlalchemy import select

    from mdm import Device

    from .actions import retry_transition
    from .models import VerdictTransition

    counts = {"retried": 0, "done": 0, "superseded": 0, "failed": 0}
    with rt.instance.database.session(dispatcher=rt.dispatcher) as s:
        rows = list(s.scalars(select(VerdictTransition).where(VerdictTransition.actions_pending.is_(True))
                              .order_by(VerdictTransition.id).limit(500)))
        for row in rows:
            device = s.get(Device, row.device_id)
            outcome = retry_transition(s, rt.hooks, device, row)
            counts["retried"] += 1
            counts[outcome] += 1
    if counts["retried"]:
        log.info("compliance.retry_actions: %s", counts)
    return counts
