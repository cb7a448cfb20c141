"""Hook events turned into outbox events, in the transaction that made them true.

critical: an event for the outside world is part of the change; if it cannot be written the
change does not commit either (the outbox insert is one row: it fails only with the database).
"""
from __future__ import annotations

from sqlalchemy import select

from ipad_mdm.db import transaction_state
from ipad_mdm.outbox import publish

from .models import WebhookSubscriber


def _active_events(session) -> set[str]:
    names: set[str] = set()
    for events in session.scalars(select(WebhookSubscriber.events).where(WebhookSubscriber.active.is_(True))):
        names.update(events or ())
    return names


def _wanted(event: str):
    """when= of the subscriptions below: is there an active subscriber for `event`? Read once per
    transaction. Without one the event is not written at all — the fan-out would give it to nobody —
    which spares a bulk evaluation of 10,000 iPads 10,000 outbox rows nobody reads."""

    def when(session, **_) -> bool:
        return event in transaction_state(session, "webhooks.wanted", lambda: _active_events(session))

    return when


def _device(device) -> dict:
    return {"udid": device.udid, "serial_number": device.serial_number or ""}


def _verdict_changed(session, device, previous, verdict, **_):
    reasons = [r.get("rule") for r in (verdict.failing_rules or ()) if isinstance(r, dict) and r.get("rule")]
    publish(session, "verdict.changed", {
        **_device(device), "previous": getattr(previous, "state", previous), "state": verdict.state,
        "document_access": verdict.state in ("compliant", "grace"),
        "grace_deadline": verdict.grace_deadline.isoformat() if verdict.grace_deadline else None,
        "reasons": reasons, "reasons_vi": list(verdict.reasons_vi or ()), "reasons_en": list(verdict.reasons_en or ())})


def _enrolled(session, devices, **_):
    for device in devices:
        publish(session, "device.enrolled", _device(device))


def _simple(event: str):
    def handler(session, device, **_):
        publish(session, event, _device(device))

    handler.__name__ = f"publish_{event.replace('.', '_')}"
    return handler


def subscribe(hooks) -> None:
    hooks.subscribe("verdict.changed", _verdict_changed, critical=True, name="webhooks.verdict_changed",
                    when=_wanted("verdict.changed"))
    hooks.subscribe("devices.enrolled", _enrolled, critical=True, name="webhooks.device.enrolled",
                    when=_wanted("device.enrolled"))
    for hook, event in (("device.checked_out", "device.unenrolled"),
                        ("device.retired", "device.retired")):
        hooks.subscribe(hook, _simple(event), critical=True, name=f"webhooks.{event}", when=_wanted(event))
