"""OS updates for iPads without declarative management: the same enforcement declaration, carried
out by the MDM command ScheduleOSUpdate (InstallASAP of the target version), then a
DeviceInformation query to see the new version. iPads on declarative management get the
declaration itself and report progress in softwareupdate.* status items.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from mdm import Command, Device, commands as command_queue

from .models import Declaration
from .service import assigned_device_ids, current
from .sync import os_at_least, uses_ddm

log = logging.getLogger(__name__)
ENFORCEMENT = "com.apple.configuration.softwareupdate.enforcement.specific"
# A ScheduleOSUpdate still unanswered, or answered this recently, is not sent again.
RESEND_AFTER = dt.timedelta(hours=24)


def schedule_updates(session: Session, devices: list[Device] | None = None) -> list[int]:
    """Queue ScheduleOSUpdate on every enrolled iPad without declarative management that an
    enforcement declaration reaches and that runs an older iPadOS. Returns device ids to push."""
    wanted: dict[int, str] = {}
    for decl in session.scalars(select(Declaration).where(Declaration.type == ENFORCEMENT)):
        target = current(decl).payload["TargetOSVersion"]
        ids = assigned_device_ids(session, decl)
        stmt = select(Device).where(Device.enrollment_state == "enrolled", Device.ddm_enabled_at.is_(None))
        if ids is not None:
            stmt = stmt.where(Device.id.in_(ids or [0]))
        if devices is not None:
            stmt = stmt.where(Device.id.in_([d.id for d in devices] or [0]))
        for device in session.scalars(stmt):
            if uses_ddm(device, None):
                continue  # declarative management is being turned on: the declaration itself goes there
            if not os_at_least(device.os_version, target) and (
                    device.id not in wanted or os_at_least(target, wanted[device.id])):
                wanted[device.id] = target  # the highest target that reaches it
    push = []
    since = utcnow() - RESEND_AFTER
    for device_id, target in sorted(wanted.items()):
        recent = session.scalar(select(Command.id).where(
            Command.device_id == device_id, Command.request_type == "ScheduleOSUpdate",
            (Command.status.in_(("queued", "sent", "notnow"))) | (Command.created_at >= since)).limit(1))
        if recent is not None:
            continue
        device = session.get(Device, device_id)
        command_queue.enqueue(session, device, "ScheduleOSUpdate", {"Updates": [
            {"ProductVersion": target, "InstallAction": "InstallASAP"}]}, requested_by="declarative:osupdate")
        push.append(device_id)
    if push:
        log.info("ScheduleOSUpdate queued for %d iPad(s) without declarative management", len(push))
    return push


def on_command_completed(session: Session, device: Device, command: Command) -> None:
    """After ScheduleOSUpdate: ask for the OS version (the iPad reports it once it restarted)."""
    if command.request_type != "ScheduleOSUpdate" or command.status != "acknowledged":
        return
    waiting = session.scalar(select(Command.id).where(Command.device_id == device.id,
                                                      Command.request_type == "DeviceInformation",
                                                      Command.status.in_(("queued", "notnow"))).limit(1))
    if waiting is None:
        command_queue.enqueue(session, device, "DeviceInformation", requested_by="declarative:osupdate")


def progress(session: Session) -> list[dict]:
    """Per enforcement declaration, where each iPad it reaches stands: at the target, updating
    (declaratively or by command), or failed with the reason the iPad gave."""
    from mdm import ddm

    from .status import _enforcement_of

    out = []
    for decl in session.scalars(select(Declaration).where(Declaration.type == ENFORCEMENT).order_by(Declaration.id)):
        enf = _enforcement_of(decl)
        ids = assigned_device_ids(session, decl)
        stmt = select(Device).where(Device.enrollment_state == "enrolled")
        if ids is not None:
            stmt = stmt.where(Device.id.in_(ids or [0]))
        devices = []
        for d in session.scalars(stmt.order_by(Device.udid)):
            row = {"udid": d.udid, "os_version": d.os_version, "path": "declaration" if d.ddm_enabled_at else "command"}
            if os_at_least(d.os_version, enf.target_version):
                row["state"] = "at_target"
            elif d.ddm_enabled_at is not None:
                install = ddm.status_value(d.ddm_status, "softwareupdate.install-state")
                failure = ddm.status_value(d.ddm_status, "softwareupdate.failure-reason") or {}
                row["state"] = "failed" if install == "failed" else (install or "pending")
                if isinstance(failure, dict) and failure.get("count"):
                    row["failure"] = str(failure.get("reason") or "")[:200]
            else:
                cmd = session.scalar(select(Command).where(Command.device_id == d.id,
                                                           Command.request_type == "ScheduleOSUpdate")
                                     .order_by(Command.id.desc()).limit(1))
                results = ((cmd.result or {}).get("UpdateResults") or []) if cmd is not None else []
                status = results[0].get("Status") if results and isinstance(results[0], dict) else None
                if cmd is None or cmd.status in ("queued", "sent", "notnow"):
                    row["state"] = "pending"
                elif cmd.status != "acknowledged" or status in ("InstallFailed", "DownloadFailed") or \
                        (status or "").startswith(("DownloadInsufficient", "InstallInsufficient")):
                    row["state"] = "failed"
                    chain = (results[0].get("ErrorChain") if results else None) or cmd.error_chain or []
                    first = chain[0] if chain and isinstance(chain[0], dict) else {}
                    row["failure"] = (status or "") + (f": {first.get('LocalizedDescription')}" if first else "")
                else:
                    row["state"] = "installing"
            devices.append(row)
        out.append({"declaration": decl.identifier, **enf.as_dict(), "devices": devices,
                    "overdue": sum(1 for r in devices if r["state"] != "at_target") if utcnow() >= enf.deadline else 0})
    return out
