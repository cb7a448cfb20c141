"""Configuration profiles: versioned profiles as data, assignment, rollout, drift.

Public surface: MANIFEST, register (Flask wiring and event subscriptions); profile_exists and
signed_current (a profile's current version, signed: what the declarative `legacy`
configuration delivers). Depends on mdm
(command queue, devices) and the core, never the reverse.
"""
from ipad_mdm.manifest import Manifest

__all__ = ["MANIFEST", "register", "profile_exists", "signed_current"]

MANIFEST = Manifest(name="profiles", register="profiles:register", models=("profiles.models",))


def register(app, hooks, instance) -> None:
    from . import api, drift, serialize, service

    app.register_blueprint(api.bp)
    settings = instance.settings

    def on_inventory_updated(session, device, kind, **_):
        if kind == "ProfileList":
            drift.reconcile(session, settings, device)

    hooks.subscribe("command.completed", service.on_command_completed,
                    when=lambda command, **_: command.request_type in ("InstallProfile", "RemoveProfile"))
    hooks.subscribe("inventory.updated", on_inventory_updated, when=lambda kind, **_: kind == "ProfileList")
    hooks.subscribe("device.detail", lambda session, device, detail: serialize.device_detail(session, device, detail))
    hooks.subscribe("devices.enrolled", lambda session, devices: service.on_devices_enrolled(session, instance, devices),
                    name="profiles.install")
    hooks.subscribe("device.checked_out", lambda session, device: service.on_device_gone(session, device))
    hooks.subscribe("device.retired", lambda session, device: service.on_device_gone(session, device))


def profile_exists(session, identifier: str) -> bool:
    from . import service

    try:
        service.get_profile(session, identifier)
    except service.NotFound:
        return False
    return True


def signed_current(session, instance, identifier: str) -> bytes | None:
    """The signed current version of a profile, or None if there is no such profile."""
    from . import service

    try:
        profile = service.get_profile(session, identifier)
    except service.NotFound:
        return None
    return service.sign_version(instance, profile, service.get_version(profile))
