"""Configuration profiles: versioned profiles as data, assignment, rollout, drift.

Public surface: register (Flask wiring and event subscriptions); the service module for
the API and CLI. Depends on mdm (command queue, devices) and the core, never the reverse.
"""


def register(app, hooks, instance) -> None:
    from . import api, service

    app.register_blueprint(api.bp)
    settings = instance.settings

    def on_inventory_updated(session, device, kind):
        if kind == "ProfileList":
            service.reconcile(session, settings, device)

    hooks.subscribe("command.completed", service.on_command_completed)
    hooks.subscribe("inventory.updated", on_inventory_updated)
    hooks.subscribe("device.detail", lambda session, device, detail: service.device_detail(session, device, detail))
    hooks.subscribe("device.enrolled", lambda session, device: service.on_device_enrolled(session, instance, device))
    hooks.subscribe("device.checked_out", lambda session, device: service.on_device_gone(session, device))
    hooks.subscribe("device.retired", lambda session, device: service.on_device_gone(session, device))
