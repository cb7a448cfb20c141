"""Configuration profiles: versioned profiles as data, assignment, rollout, drift.

Public surface: MANIFEST, register (Flask wiring and event subscriptions). Depends on mdm
(command queue, devices) and the core, never the reverse.
"""
from ipad_mdm.manifest import Manifest

__all__ = ["MANIFEST", "register"]

MANIFEST = Manifest(name="profiles", register="profiles:register", models=("profiles.models",))


def register(app, hooks, instance) -> None:
    from . import api, drift, serialize, service

    app.register_blueprint(api.bp)
    settings = instance.settings

    def on_inventory_updated(session, device, kind):
        if kind == "ProfileList":
            drift.reconcile(session, settings, device)

    hooks.subscribe("command.completed", service.on_command_completed)
    hooks.subscribe("inventory.updated", on_inventory_updated)
    hooks.subscribe("device.detail", lambda session, device, detail: serialize.device_detail(session, device, detail))
    hooks.subscribe("device.enrolled", lambda session, device: service.on_device_enrolled(session, instance, device))
    hooks.subscribe("device.checked_out", lambda session, device: service.on_device_gone(session, device))
    hooks.subscribe("device.retired", lambda session, device: service.on_device_gone(session, device))
