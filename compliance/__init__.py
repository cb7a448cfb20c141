"""Device compliance (issue #4): policies as data, verdicts, escalation, actions.

Public surface
  register(app, hooks, instance)            subscribe to mdm events, mount the API
  current_verdict(session, device_id)       -> VerdictView | None (state, deadline, reasons_vi,
                                               reasons_en, failing_rules, evaluated_at, ...)
  evaluate_device(session, hooks, device, now=None) -> EvaluationResult
  VerdictView.allows_document_access(now)   the document gateway's decision
  VerdictView.cut_vpn                       whether the VPN should cut the peer

Evaluation happens synchronously on `inventory.updated` (same session, so the
verdict is stored atomically with the inventory that produced it), on enrolment
and check-out, and every 5 minutes for all enrolled devices (compliance.jobs),
so a device that went silent turns non-compliant without sending anything.
The state machine is documented in compliance.engine.
"""
from __future__ import annotations

import logging
import weakref

from .engine import VerdictView, current_verdict  # noqa: F401
from .engine import evaluate_device as _evaluate_device

log = logging.getLogger("compliance")

# instance -> hooks, so periodic jobs (which receive only (instance, dispatcher))
# emit verdict.changed to the same subscribers (VPN) as the web process.
_HOOKS: dict[int, tuple[weakref.ref, object]] = {}


def hooks_for(instance):
    entry = _HOOKS.get(id(instance))
    if entry is not None and entry[0]() is instance:
        return entry[1]
    log.warning("compliance: no hooks registered for this instance; verdict.changed reaches no subscriber")
    from ipad_mdm.hooks import Hooks

    return Hooks()


def evaluate_device(session, hooks, device, now=None, **kw):
    """Evaluate one device now (in the caller's transaction); see compliance.engine."""
    return _evaluate_device(session, hooks, device, now, **kw)


def register(app, hooks, instance) -> None:
    from . import api, engine

    _HOOKS[id(instance)] = (weakref.ref(instance), hooks)

    def on_inventory(session, device, kind):
        _safe(lambda: engine.evaluate_device(session, hooks, device, trigger=f"inventory:{kind}"), device)

    def on_enrolled(session, device):
        _safe(lambda: engine.evaluate_device(session, hooks, device, trigger="enrolled", new_enrollment=True), device)

    def on_left(trigger):
        def handler(session, device):
            _safe(lambda: engine.evaluate_device(session, hooks, device, trigger=trigger), device)
        return handler

    def on_detail(session, device, detail):
        view = engine.current_verdict(session, device.id)
        detail["verdict"] = view.to_dict() if view is not None else None

    hooks.subscribe("inventory.updated", on_inventory)
    hooks.subscribe("device.enrolled", on_enrolled)
    hooks.subscribe("device.checked_out", on_left("checked_out"))
    hooks.subscribe("device.retired", on_left("retired"))
    hooks.subscribe("device.detail", on_detail)
    app.register_blueprint(api.bp)


def _safe(fn, device) -> None:
    """Run an evaluation inside a savepoint: a compliance bug must never make the
    device's MDM request fail (the device would retry the same answer forever).
    The 5-minute scheduled run evaluates the device again."""
    session = None
    try:
        from sqlalchemy.orm import object_session

        session = object_session(device)
        session.flush()
        if _savepoint_safe(session):
            with session.begin_nested():
                fn()
        else:
            fn()
    except Exception:
        log.exception("compliance evaluation of device %s failed; the scheduled run will retry",
                      getattr(device, "udid", "?"))


def _savepoint_safe(session) -> bool:
    """pysqlite issues BEGIN lazily before the first write; a SAVEPOINT opened before
    that would start (and its RELEASE would commit) the transaction on its own."""
    if session.get_bind().dialect.name != "sqlite":
        return True
    dbapi = session.connection().connection.dbapi_connection
    return bool(getattr(dbapi, "in_transaction", False))
