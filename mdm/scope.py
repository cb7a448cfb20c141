"""Which device an API request may act on: the one owner of the unit-scope rule.

A bearer token may be limited to one unit (`ipad-mdm api-token create --unit CODE`). Every
route under /api/v1/devices/<udid>/… (whichever package serves it) looks the device up here,
so a token of one unit never sees or acts on another unit's iPad: it gets the same 404 as an
unknown UDID.
"""
from __future__ import annotations

from flask import g
from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Device


def caller_unit_id() -> int | None:
    return g.get("api_unit_id")


def in_scope(device: Device | None) -> bool:
    unit_id = caller_unit_id()
    return device is not None and (unit_id is None or device.unit_id == unit_id)


def device_for_request(session: Session, udid: str) -> Device | None:
    """The device with this UDID if the caller may see it, else None (answer 404)."""
    device = session.scalar(select(Device).where(Device.udid == udid))
    return device if in_scope(device) else None
