"""Periodic compliance work (embedded scheduler or Celery beat; both call these
with (instance, dispatcher))."""
from __future__ import annotations

import logging

from ipad_mdm.jobs import periodic

from . import engine

log = logging.getLogger("compliance.jobs")


@periodic("compliance.evaluate_all", 300)
def evaluate_all(instance, dispatcher) -> dict:
    """Re-evaluate every enrolled device: deadlines pass and silent devices go
    non-compliant without any message from the device."""
    from . import hooks_for

    counts = engine.evaluate_all(instance.database, hooks_for(instance))
    push_ids = counts.pop("push_device_ids", [])
    if push_ids and dispatcher is not None:
        # After commit (evaluate_all commits per batch): DeviceLock / EnableLostMode are waiting.
        dispatcher.request_push(push_ids)
    if counts["transitions"] or counts["errors"]:
        log.info("compliance.evaluate_all: %s", counts)
    return counts


@periodic("compliance.request_inventory", 3600)
def request_inventory(instance, dispatcher) -> list[int]:
    """Ask devices whose inventory is older than IPAD_MDM_INVENTORY_INTERVAL_HOURS for a fresh one."""
    ids = engine.request_stale_inventory(instance.database, interval_hours=engine.inventory_interval_hours(instance))
    if ids and dispatcher is not None:
        dispatcher.request_push(ids)
    if ids:
        log.info("compliance.request_inventory: queued inventory for %d device(s)", len(ids))
    return ids
