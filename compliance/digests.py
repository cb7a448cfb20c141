"""What the scheduled run reads of each device's inventory, on PostgreSQL: the reduced inventory kept
by the version of the inventory it came from (models.InventoryDigest), not the inventory itself.

A device's inventory columns (DeviceInformation, SecurityInfo, ProfileList, InstalledApplicationList
answers and the declarative status report) are kilobytes of JSON, of which the rules read a few
hundred bytes (facts.reduce_inventory). Sending and decoding all of it for 10,000 devices every
five minutes was a large part of a steady run, and it grows with every app an iPad has. PostgreSQL
numbers each version of a device's inventory (devices.inventory_version: a trigger takes a new number
from a sequence whenever a statement writes one of those columns, migration 0029). The slice read
carries that number; where it is the one kept with the reduced inventory, the reduced inventory is
used; elsewhere the inventory is read in full (a second query, for those devices only), reduced, and
kept with its number for the next run. The write pass keeps the reduction of every device it
evaluates too (`keep_devices`): it has decoded their inventories anyway, so the run after a first run
reads none of them again.

The number comes from the database whatever wrote the inventory and however, so nothing that writes
an inventory has to remember to invalidate anything. The rules themselves run on every device in
every run (time passes: check-ins go stale, certificates expire, deadlines come); only the decoding
of unchanged JSON is saved. SQLite, the embedded default, has no such number and reads the
inventory every time (compliance.bulk), as does a PostgreSQL schema without the trigger (`available`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging

from sqlalchemy import Text, cast, func, literal, select

from ipad_mdm.db import among
from mdm import Device

from .facts import REDUCTION, reduce_inventory
from .models import InventoryDigest

log = logging.getLogger("compliance")

_INVENTORY = (Device.device_information, Device.security_info, Device.profile_list, Device.installed_applications,
              Device.ddm_status)
_INVENTORY_TIMES = ("device_information_at", "security_info_at", "profile_list_at", "installed_applications_at")


# What the reduction is (facts.REDUCTION) goes into every kept digest, so a reduced inventory kept
# by an older reduction is never taken for a newer one's.
_REDUCTION_TAG = hashlib.sha256(REDUCTION.encode()).hexdigest()[:16] + ":"


def _digest():
    """The digest of a device's inventory as it stands: the reduction's tag and the inventory's number."""
    return func.concat(literal(_REDUCTION_TAG), cast(Device.inventory_version, Text))


def digest_of(device) -> str:
    """The same, of a device row loaded with its inventory (the write pass's)."""
    return f"{_REDUCTION_TAG}{device.inventory_version}"


def keep_devices(database, now: dt.datetime, devices) -> None:
    """keep() the reduced inventories of devices loaded whole (with their inventory's number)."""
    keep(database, now, [(d.id, digest_of(d), reduce_inventory(d)) for d in devices])


TRIGGER = "devices_inventory_version"  # migration 0029
_WARNED: set = set()


def available(database) -> bool:
    """PostgreSQL with the trigger that numbers inventories. A schema made otherwise (say by
    metadata.create_all) has none, and every number would stay what it was: there the run reads
    every inventory, as on SQLite, rather than trust a number nothing renews."""
    if not database.is_postgres:
        return False
    found = database.triggers_enabled(TRIGGER)
    if not found and database.url not in _WARNED:
        _WARNED.add(database.url)
        log.warning("compliance: devices has no %s trigger (schema not made by the migrations?); "
                    "every inventory is read in full", TRIGGER)
    return found


# Added to the slice read (compliance.bulk): the digest now, and what was kept with which digest.
READ_COLUMNS = (_digest().label("digest"), InventoryDigest.digest.label("kept_digest"),
                InventoryDigest.reduced.label("kept"))


def join(statement):
    """The slice read, joined to the kept reduced inventories."""
    return statement.outerjoin(InventoryDigest, InventoryDigest.device_id == Device.id)


def inventories(session, rows) -> tuple[dict, list]:
    """For the rows of a slice that have a verdict (the others take the full path anyway): {device
    id: the row's columns with the reduced inventory}, and [(device id, digest, reduced)] to keep."""
    stale = [r.id for r in rows if r.device_id is not None and r.kept_digest != r.digest]
    fresh = {}
    if stale:
        # The number again, of the very JSON read here (the inventory may have changed since the slice
        # was read): what is kept always belongs to what it was reduced from.
        for full in session.execute(select(Device.id, _digest().label("digest"), *_INVENTORY,
                                           *(getattr(Device, t) for t in _INVENTORY_TIMES))
                                    .where(among(session, Device.id, stale))):
            fresh[full.id] = (full, reduce_inventory(full))
    views = {}
    for r in rows:
        if r.device_id is None:
            continue
        got = fresh.get(r.id)
        if got is None:
            if r.kept_digest == r.digest:
                views[r.id] = _Device(r, r, r.kept)
            continue  # gone since the slice was read: the full path finds out
        full, reduced = got
        views[r.id] = _Device(r, full, reduced)
    return views, [(device_id, full.digest, reduced) for device_id, (full, reduced) in fresh.items()]


class _Device:
    """What facts_of and the comparison read of a device: the slice row's columns, the inventory
    times of the read that reduced its inventory, the reduced inventory."""

    __slots__ = ("id", "unit_id", "enrollment_state", "os_version", "is_supervised", "lost_mode_enabled",
                 "last_seen_at", "device_information", "security_info", "profile_list", "installed_applications",
                 "ddm_status", *_INVENTORY_TIMES)

    def __init__(self, row, times, reduced: dict):
        self.id, self.unit_id, self.enrollment_state = row.id, row.unit_id, row.enrollment_state
        self.os_version, self.is_supervised, self.lost_mode_enabled = row.os_version, row.is_supervised, row.lost_mode_enabled
        self.last_seen_at = row.last_seen_at
        self.device_information_at, self.security_info_at = times.device_information_at, times.security_info_at
        self.profile_list_at, self.installed_applications_at = times.profile_list_at, times.installed_applications_at
        self.device_information, self.security_info = reduced["device_information"], reduced["security_info"]
        self.profile_list, self.installed_applications = reduced["profile_list"], reduced["installed_applications"]
        self.ddm_status = reduced["ddm_status"]


def keep(database, now: dt.datetime, fresh: list) -> None:
    """Keep these reduced inventories with their digests (one statement, inserted or replaced). A
    cache: if it cannot be written (a device deleted meanwhile), the next run reads those inventories
    again, and this run's verdicts stand.

    The rows go as one JSON array, taken apart by the database: an executemany adapted each row's
    parameters one by one, a third of the run after a first run, which keeps every device's."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from ipad_mdm.db import json_dumps

    try:
        with database.session() as s:
            s.execute(text(
                f"INSERT INTO {InventoryDigest.__tablename__} (device_id, digest, reduced, written_at) "
                "SELECT (x->>0)::integer, x->>1, x->2, :now FROM json_array_elements(CAST(:rows AS json)) AS x "
                "ON CONFLICT (device_id) DO UPDATE SET digest = excluded.digest, reduced = excluded.reduced, "
                "written_at = excluded.written_at"),
                {"rows": json_dumps([[device_id, digest, reduced] for device_id, digest, reduced in fresh]), "now": now})
    except SQLAlchemyError as exc:
        log.warning("compliance: %d reduced inventories not kept (%s); read in full next run", len(fresh),
                    type(exc).__name__)
