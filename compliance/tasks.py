"""Compliance tasks for the Celery workers (the app lives in ipad_mdm.tasks)."""
from __future__ import annotations

from ipad_mdm.tasks import Runtime, app
from ipad_mdm.tasks import parse_now as _now


@app.task(name="compliance.evaluate_device")
def evaluate_device(device_id: int, now_iso: str | None = None) -> dict:
    """Evaluate one device; returns {"device_id", "state", "transitions"}."""
    from mdm.models import Device

    from . import engine

    inst, hooks, dispatcher = Runtime.get()[:3]
    with inst.database.session() as s:
        device = s.get(Device, device_id)
        if device is None:
            return {"device_id": device_id, "state": None, "transitions": 0}
        res = engine.evaluate_device(s, hooks, device, _now(now_iso), trigger="task")
    if res.push_needed:
        dispatcher.request_push([device_id])
    return {"device_id": device_id, "state": res.state, "transitions": [t.to_state for t in res.transitions]}


@app.task(name="compliance.evaluate_all")
def evaluate_all(now_iso: str | None = None) -> dict:
    from . import engine

    inst, hooks, dispatcher = Runtime.get()[:3]
    counts = engine.evaluate_all(inst.database, hooks, _now(now_iso))
    push_ids = counts.pop("push_device_ids", [])
    if push_ids:
        dispatcher.request_push(push_ids)
    return counts


@app.task(name="compliance.request_inventory")
def request_inventory() -> list[int]:
    from . import jobs

    inst, _hooks, dispatcher = Runtime.get()[:3]
    return jobs.request_inventory(inst, dispatcher)
