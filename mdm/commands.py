"""The per-device command queue and inventory updates from command results.

Statuses: queued -> sent -> acknowledged | error | command_format_error.
NotNow marks the command `notnow`: it is skipped for the rest of that
connection and offered again when the device next says Idle (Apple's rule:
the device will come back when it can act). A `sent` command the device never
answered (connection dropped) is offered again on an Idle once RESEND_AFTER
has passed.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import plistlib

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from ipad_mdm.db import add_row, utcnow
from ipad_mdm.hooks import Hooks
from ipad_mdm.outbox import publish
from ipad_mdm.plists import dumps as dumps_plist
from ipad_mdm.plists import to_json

from . import fastpath
from .models import Command, CommandEvent, Device
from .protocol import INVENTORY_COMMANDS, SECRET_KEYS, CommandResponse, build_command, clip

log = logging.getLogger(__name__)

_STATUS_OF_RESPONSE = {
    "Acknowledged": "acknowledged",
    "Error": "error",
    "CommandFormatError": "command_format_error",
    "NotNow": "notnow",
}
FINAL_STATUSES = ("acknowledged", "error", "command_format_error", "cancelled")
OPEN_STATUSES = ("queued", "sent", "notnow")  # not answered yet: every status but the final ones


class CommandRefused(ValueError):
    pass


def enqueue(session: Session, device: Device, request_type: str, params: dict | None = None,
            *, requested_by: str = "", command_uuid: str | None = None) -> Command:
    """Queue a command for a device (validated by the protocol module)."""
    cmd = _queued(session, device, request_type, params, requested_by, command_uuid)
    session.flush()  # callers keep the command's id
    return cmd


def queue(session: Session, device: Device, request_type: str, params: dict | None = None,
          *, requested_by: str = "", command_uuid: str | None = None) -> Command:
    """Queue a command, written at the next flush with the others queued meanwhile (a provisioning
    pass queues one per new iPad: one INSERT for all of them). Its id is not known until then."""
    return _queued(session, device, request_type, params, requested_by, command_uuid)


def enqueue_many(session: Session, device: Device, request_types, *, requested_by: str = "") -> list[Command]:
    """Queue several parameterless commands, in order, written in one INSERT at the next flush (the
    five inventory queries of an enrollment)."""
    return [_queued(session, device, rt, None, requested_by, None) for rt in request_types]


def _queued(session: Session, device: Device, request_type: str, params: dict | None, requested_by: str,
            command_uuid: str | None) -> Command:
    if device.enrollment_state in ("retired", "checked_out"):
        raise CommandRefused(f"device is {device.enrollment_state}; it takes no commands")
    uuid_, body = build_command(request_type, params, command_uuid)
    cmd = Command(uuid=uuid_, device_id=device.id, request_type=request_type, command_plist=body,
                  status="queued", requested_by=requested_by, created_at=utcnow())
    # The row itself records the queueing (created_at, requested_by): no "queued" event row; the
    # history shows it first (service.command_history). Events are what happened after.
    session.add(cmd)
    device.push_pending = True
    fastpath.command_queued(session, device.id)
    if request_type in ("EnableLostMode", "DisableLostMode"):
        # Loss is announced when it is declared, not when the iPad next answers: the document
        # system ends the device's sessions at once.
        publish(session, "device.lost" if request_type == "EnableLostMode" else "device.found",
                {"udid": device.udid, "serial_number": device.serial_number or "", "requested_by": requested_by})
    return cmd


def _lock(stmt, session: Session):
    # On PostgreSQL, several workers may serve the same device at once: a row
    # lock with SKIP LOCKED hands each command to exactly one connection.
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


# A command handed out but never answered is offered again only after this long:
# the answer may still be on its way through another worker.
RESEND_AFTER = dt.timedelta(seconds=int(os.environ.get("IPAD_MDM_COMMAND_RESEND_SECONDS", "60")))

# Statements whose RETURNING rows are the session's view of the command (no read back).
_RETURNED = {"synchronize_session": False, "populate_existing": True}


def next_for_delivery(session: Session, device: Device, *, after_idle: bool) -> Command | None:
    """Claim the device's next command: one UPDATE … WHERE id = (the oldest deliverable, locked
    with SKIP LOCKED on PostgreSQL) RETURNING the row. Two workers serving the device at once
    claim different commands (or one gets none); on SQLite the statement runs under the database
    write lock, so its choice and its claim are one step there too."""
    # NotNow commands wait for the next Idle; unanswered ones come back once stale.
    fresh = ("queued", "notnow") if after_idle else ("queued",)
    now = utcnow()
    wanted = or_(Command.status.in_(fresh), and_(Command.status == "sent", Command.sent_at < now - RESEND_AFTER))
    oldest = _lock(select(Command.id).where(Command.device_id == device.id, wanted).order_by(Command.id).limit(1),
                   session)
    claim = (update(Command).where(Command.id == oldest.scalar_subquery())
             .values(status="sent", sent_at=now, attempts=Command.attempts + 1).returning(Command))
    cmd = session.scalars(claim, execution_options=_RETURNED).first()
    if cmd is not None:
        _history(session, cmd.id, "sent", f"attempt {cmd.attempts}")
    return cmd


def _history(session: Session, command_id: int, status: str, detail: str | None = None) -> None:
    """One row of a command's history, on the device's request path (each delivery and answer)."""
    add_row(session, CommandEvent, command_id=command_id, status=status, detail=detail, at=utcnow())


def record_response(session: Session, hooks: Hooks, device: Device, response: CommandResponse) -> Command | None:
    new_status = _STATUS_OF_RESPONSE[response.status]
    values: dict = {"status": new_status}
    if new_status != "notnow":
        values["completed_at"] = utcnow()
        if new_status == "acknowledged":
            values["result"] = to_json(response.result())
        else:
            values["error_chain"] = to_json(response.error_chain) if response.error_chain else None
            values["result"] = to_json(response.result()) or None
    # The answer is applied by one compare-and-set UPDATE … RETURNING: only to a command still open
    # (of two concurrent copies of one answer, one is applied; a second NotNow changes nothing).
    open_statuses = tuple(st for st in OPEN_STATUSES if st != new_status)
    answered = (update(Command)
                .where(Command.uuid == response.command_uuid, Command.device_id == device.id,
                       Command.status.in_(open_statuses))
                .values(**values).returning(Command))
    cmd = session.scalars(answered, execution_options=_RETURNED).first()
    if cmd is None:
        known = session.scalar(select(Command.status).where(Command.uuid == response.command_uuid,
                                                            Command.device_id == device.id))
        if known is None:
            log.warning("device %s answered unknown command %s", device.udid, response.command_uuid)
        else:
            # A duplicate answer (retried HTTP request, or two copies at once): the first one stands.
            log.info("duplicate %s answer for command %s (%s) ignored", response.status, response.command_uuid, known)
        return None
    detail = None
    if new_status == "notnow":
        _history(session, cmd.id, new_status)
        return cmd
    forget_secrets(cmd)
    if new_status == "acknowledged":
        apply_inventory(session, hooks, device, cmd, response.raw)
    elif cmd.error_chain:
        first = cmd.error_chain[0]
        detail = f"{first.get('ErrorDomain')} {first.get('ErrorCode')}: {first.get('LocalizedDescription', '')}"[:500]
    _history(session, cmd.id, new_status, detail)
    hooks.emit("command.completed", session=session, device=device, command=cmd)
    return cmd


_INVENTORY = {
    # request type -> (response key, device attribute)
    "DeviceInformation": ("QueryResponses", "device_information"),
    "SecurityInfo": ("SecurityInfo", "security_info"),
    "ProfileList": ("ProfileList", "profile_list"),
    "CertificateList": ("CertificateList", "certificate_list"),
    "InstalledApplicationList": ("InstalledApplicationList", "installed_applications"),
}


def apply_inventory(session: Session, hooks: Hooks, device: Device, cmd: Command, raw: dict) -> None:
    now = utcnow()
    if cmd.request_type in ("EnableLostMode", "DisableLostMode"):
        device.lost_mode_enabled = cmd.request_type == "EnableLostMode"
        hooks.emit("inventory.updated", session=session, device=device, kind=cmd.request_type, batch_pending=False)
        return
    spec = _INVENTORY.get(cmd.request_type)
    if spec is None:
        return
    key, attr = spec
    value = raw.get(key)
    if value is None:
        log.warning("%s answer from %s lacks %s", cmd.request_type, device.udid, key)
        return
    setattr(device, attr, to_json(value))
    setattr(device, f"{attr}_at", now)
    if cmd.request_type == "DeviceInformation" and isinstance(value, dict):
        for src, dst in (("OSVersion", "os_version"), ("BuildVersion", "build_version"), ("Model", "model"),
                         ("ModelName", "model_name"), ("ProductName", "product_name"), ("DeviceName", "device_name"),
                         ("SerialNumber", "serial_number"), ("IMEI", "imei")):
            if isinstance(value.get(src), str):
                setattr(device, dst, clip(src, value[src]))
        if isinstance(value.get("IsSupervised"), bool):
            device.is_supervised = value["IsSupervised"]
        if isinstance(value.get("IsMDMLostModeEnabled"), bool):
            device.lost_mode_enabled = value["IsMDMLostModeEnabled"]
        if isinstance(value.get("AwaitingConfiguration"), bool):
            device.awaiting_configuration = value["AwaitingConfiguration"]
    hooks.emit("inventory.updated", session=session, device=device, kind=cmd.request_type,
               batch_pending=_inventory_outstanding(session, device.id, cmd.id))


def _inventory_outstanding(session: Session, device_id: int, answered_id: int) -> bool:
    """Whether another inventory query of this device is still unanswered: an iPad answers the
    five of a refresh one after the other, and a decision on the whole (a compliance verdict) is
    worth taking once, on the last answer, not five times on partial facts."""
    return session.scalar(select(Command.id).where(
        Command.device_id == device_id, Command.id != answered_id, Command.status.in_(OPEN_STATUSES),
        Command.request_type.in_(INVENTORY_COMMANDS)).limit(1)) is not None


def forget_secrets(cmd: Command) -> None:
    """Drop the secret keys (protocol.SECRET_KEYS) from a command that no longer needs them."""
    keys = SECRET_KEYS.get(cmd.request_type)
    if not keys:
        return
    body = plistlib.loads(cmd.command_plist)
    command = body["Command"]
    changed = False
    for key in keys:
        value = command.get(key)
        if isinstance(value, bytes) and value:
            if cmd.request_type == "InstallProfile":
                command.update(_profile_reference(value))
            command[key] = b""
            command[f"{key}SHA256"] = hashlib.sha256(value).hexdigest()
            changed = True
        elif isinstance(value, str) and value:
            command[key] = ""
            command[f"{key}Forgotten"] = True
            changed = True
    if changed:
        cmd.command_plist = dumps_plist(body)


def _profile_reference(payload: bytes) -> dict:
    """Which profile an InstallProfile carried (kept after its payload is forgotten)."""
    from ipad_mdm.crypto import cms

    try:
        try:
            content = cms.parse_signed_data(payload)["encap_content_info"]["content"].native
        except cms.CMSError:
            content = payload
        profile = plistlib.loads(content)
        return {"ProfileIdentifier": str(profile["PayloadIdentifier"]), "ProfileUUID": str(profile["PayloadUUID"]).upper()}
    except Exception:  # not a readable profile: nothing to keep
        return {}


def find(session: Session, command_uuid: str) -> Command | None:
    return session.scalar(select(Command).where(Command.uuid == command_uuid))


def cancel(session: Session, cmd: Command, by: str = "") -> None:
    if cmd.status in FINAL_STATUSES:
        raise CommandRefused(f"command is already {cmd.status}")
    cmd.status = "cancelled"
    cmd.completed_at = utcnow()
    forget_secrets(cmd)
    session.add(CommandEvent(command_id=cmd.id, status="cancelled", detail=by or None))
