"""Device compliance (issue #4): policies as data, verdicts, escalation, actions.

Public surface
  register(app, hooks, instance)            subscribe to mdm events, mount the API
  current_verdict(session, device_id)       -> VerdictView | None (state, deadline, reasons_vi,
                                               reasons_en, failing_rules, evaluated_at, ...)
  current_verdicts(session, device_ids)     -> {device_id: VerdictView}, one query
  evaluate_device(session, hooks, device, now=None) -> EvaluationResult
  policies (module), clock (module), labels (rule, parameter and action names in vi/en), DeviceVerdict, Policy, VerdictTransition, PolicyInputError
  VerdictView.cut_vpn                       whether the VPN should cut the peer

Evaluation happens synchronously on `inventory.updated` (the last answer of a refresh) and
`status.reported` (same session, so the
verdict is stored atomically with the inventory that produced it), on enrolment
and check-out, and every 5 minutes for all enrolled devices (compliance.jobs),
so a device that went silent turns non-compliant without sending anything.
The state machine is documented in compliance.engine.
"""
from __future__ import annotations

import logging

from ipad_mdm.manifest import Manifest

from . import clock, labels, policies
from .engine import evaluate_device as _evaluate_device
from .verdicts import VerdictView, current_verdict, current_verdicts
from .models import DeviceVerdict, Policy, VerdictTransition
from .rules import RULE_KINDS, PolicyInputError

__all__ = ["MANIFEST", "register", "clock", "labels", "policies", "VerdictView", "current_verdict", "current_verdicts",
           "evaluate_device",
           "DeviceVerdict", "Policy", "VerdictTransition", "RULE_KINDS", "PolicyInputError"]

MANIFEST = Manifest(name="compliance", register="compliance:register", models=("compliance.models",),
                    jobs=("compliance.jobs",))

log = logging.getLogger("compliance")


def evaluate_device(session, hooks, device, now=None, **kw):
    """Evaluate one device now (in the caller's transaction); see compliance.engine."""
    return _evaluate_device(session, hooks, device, now, **kw)


def register(app, hooks, instance) -> None:
    """Evaluate on every inventory answer, enrollment, check-out and retirement, in the same
    transaction. A failing evaluation is confined to its SAVEPOINT by the hooks (the device's
    MDM request goes on) and the scheduled run evaluates the device again."""
    from . import api, bulk, engine

    def on_inventory(session, device, kind, **_):
        engine.evaluate_device(session, hooks, device, trigger=f"inventory:{kind}")

    def on_enrolled(session, devices):
        # The provisioning pass that emits devices.enrolled has claimed their rows: their locks are held.
        bulk.evaluate_new_enrollments(session, hooks, devices)

    def on_left(trigger):
        def handler(session, device):
            engine.evaluate_device(session, hooks, device, trigger=trigger)
        return handler

    def on_detail(session, device, detail):
        view = current_verdict(session, device.id)
        detail["verdict"] = view.to_dict() if view is not None else None

    def on_status(session, device, report, changed):
        # A status report is evaluated like an inventory answer, in the same transaction.
        engine.evaluate_device(session, hooks, device, trigger="status")

    # Once per inventory refresh, on its last answer; a refresh left half answered is evaluated by
    # the scheduled run (the facts already stored count there).
    hooks.subscribe("inventory.updated", on_inventory, name="compliance.evaluate",
                    when=lambda batch_pending=False, **_: not batch_pending)
    hooks.subscribe("status.reported", on_status, name="compliance.evaluate")
    hooks.subscribe("devices.enrolled", on_enrolled, name="compliance.evaluate")
    hooks.subscribe("device.checked_out", on_left("checked_out"), name="compliance.evaluate")
    hooks.subscribe("device.retired", on_left("retired"), name="compliance.evaluate")
    hooks.subscribe("device.detail", on_detail, name="compliance.detail")
    app.register_blueprint(api.bp)
