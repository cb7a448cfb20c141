"""Await Configuration: an iPad enrolled through ADE stays in Setup Assistant until the office's
setup is on it, then DeviceConfigured lets it go.

The packages that install what a unit requires (profiles, VPN, the office's apps) queue their
commands on devices.enrolled; this package subscribes after them. Whenever such an iPad has no
install command outstanding (queued, sent, not now) and none refused, DeviceConfigured is
queued, once. A refused install keeps the iPad held (the console and API show why) until the
cause is fixed or IT releases it by hand (POST /api/v1/devices/<udid>/ade/release).
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from mdm import Command, EnrollmentToken, commands

log = logging.getLogger("ade.configure")

INSTALLS = ("InstallProfile", "InstallApplication", "Settings", "DeclarativeManagement", "ScheduleOSUpdate")
OUTSTANDING = ("queued", "sent", "notnow")
RELEASE = "DeviceConfigured"
ADE_TOKEN_PREFIX = "ade:"


def through_ade(session, device) -> bool:
    if device.enrollment_token_id is None:
        return False
    token = session.get(EnrollmentToken, device.enrollment_token_id)
    return token is not None and (token.created_by or "").startswith(ADE_TOKEN_PREFIX)


def state(session, device) -> dict:
    rows = session.execute(select(Command.request_type, Command.status).where(Command.device_id == device.id)).all()
    outstanding = sorted({t for t, st in rows if t in INSTALLS and st in OUTSTANDING})
    refused = sorted({t for t, st in rows if t in INSTALLS and st in ("error", "command_format_error")})
    released = any(t == RELEASE for t, _ in rows)
    return {"awaiting_configuration": bool(device.awaiting_configuration), "outstanding": outstanding,
            "refused": refused, "released": released}


def maybe_release(session, device, *, force: bool = False, by: str = "mdm") -> bool:
    if not device.awaiting_configuration:
        return False
    st = state(session, device)
    if st["released"] or (not force and (st["outstanding"] or st["refused"])):
        if st["refused"] and not st["released"]:
            log.warning("ADE iPad %s held in Setup Assistant: %s refused", device.udid, ", ".join(st["refused"]))
        return False
    commands.enqueue(session, device, RELEASE, requested_by=by)
    log.info("ADE iPad %s configured: DeviceConfigured queued (%s)", device.udid, by)
    return True


def on_enrolled(session, devices, **_):
    for device in devices:
        if device.awaiting_configuration and through_ade(session, device):
            maybe_release(session, device)


def concerns(device, command, **_) -> bool:
    """Whether on_command_completed has anything to do (decided without the database)."""
    return command.request_type == RELEASE or (command.request_type in INSTALLS and bool(device.awaiting_configuration))


def on_command_completed(session, device, command, **_):
    if command.request_type == RELEASE and command.status == "acknowledged":
        device.awaiting_configuration = False
        return
    if command.request_type in INSTALLS and device.awaiting_configuration and through_ade(session, device):
        maybe_release(session, device)
