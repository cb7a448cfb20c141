"""Web console (issue #7): accounts and roles, units, the iPad handover workflow, fleet pages.

Public surface
  register(app, hooks, instance)        mount /console/, subscribe to devices.enrolled and command.completed
  accounts.create_user(session, username, password, role, full_name=, unit=, leader_id=, created_by=)
  accounts.PERMISSIONS / accounts.allowed(role, permission)
  handover.register_device / create_enrollment_token / assign / hand_over / training_done /
      put_in_service / return_device / retire / force_retire / cancel   (the state machine; TRANSITIONS)
  pdf.minute_pdf(snapshot, event_id=)   the handover / return minute (biên bản) as PDF bytes
  cli.user                              click group: `ipad-mdm user create|list|unlock|set-password`
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

__all__ = ["MANIFEST", "register"]

MANIFEST = Manifest(name="console", register="console:register", models=("console.models",),
                    cli=("console.cli:user",))


def register(app, hooks, instance) -> None:
    from . import (  # noqa: F401  (routes register on bp)
        handover, views, views_admin, views_ade, views_apps, views_ddm, views_handover, views_push, views_usb_tokens,
        views_vpn)
    from .web import bp

    app.register_blueprint(bp)

    def on_enrolled(session, devices):
        handover.on_devices_enrolled(session, devices)

    def on_command_completed(session, device, command):
        handover.on_command_completed(session, hooks, device, command)

    hooks.subscribe("devices.enrolled", on_enrolled, name="console.handover")
    from . import handover_abm

    hooks.subscribe("device.expected", handover_abm.expected_serial, name="console.expected_serial")
    hooks.subscribe("ade.devices_synced", lambda session, devices, **_: handover_abm.register_from_abm(session, devices),
                    name="console.register_from_abm")
    hooks.subscribe("command.completed", on_command_completed,
                    when=lambda command, **_: command.request_type == "EraseDevice")
