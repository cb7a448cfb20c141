"""Serials known before an iPad enrolls by Automated Device Enrollment: the ABM sync registers
them in the handover workflow, and the ADE enrollment asks whether a serial is expected."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit

from .handover import SERIAL_RE, normalise_serial
from .models import DeviceRecord, HandoverEvent


def register_from_abm(session: Session, devices: list[dict]) -> int:
    """Hook (ade.devices_synced): iPads Apple Business Manager assigned to this server join the
    handover workflow as registered (no unit yet: IT chooses it), unless a live record exists."""
    added = 0
    for d in devices:
        serial = normalise_serial(d.get("serial_number", ""))
        if not SERIAL_RE.match(serial) or session.scalar(select(DeviceRecord.id).where(
                DeviceRecord.serial_number == serial, DeviceRecord.state != "retired").limit(1)) is not None:
            continue
        now = utcnow()
        record = DeviceRecord(serial_number=serial, model=(d.get("model") or "iPad")[:128], unit_id=None,
                              state="registered", note="Apple Business Manager", created_by="abm", created_at=now,
                              updated_at=now)
        session.add(record)
        session.flush()
        session.add(HandoverEvent(record_id=record.id, action="register", from_state=None, to_state="registered",
                                  at=now, by="abm", note="Apple Business Manager"))
        added += 1
    return added


def expected_serial(session: Session, serial: str, out: dict) -> None:
    """Hook (device.expected): a serial registered for enrollment may enroll by ADE, into its unit."""
    record = session.scalar(select(DeviceRecord).where(
        DeviceRecord.serial_number == normalise_serial(serial),
        DeviceRecord.state.in_(("registered", "enrollment_pending"))).order_by(DeviceRecord.id.desc()).limit(1))
    if record is not None:
        out["registered"] = True
        if record.unit_id is not None:
            out["unit_code"] = session.scalar(select(Unit.code).where(Unit.id == record.unit_id))
