"""The IT Center's handover workflow (bàn giao thiết bị) as a state machine.

    registered ──enroll_token──▶ enrollment_pending ──(device enrolls)──▶ enrolled ──assign──▶ assigned
    assigned ──hand_over──▶ handed_over ──training──▶ trained ──in_service──▶ in_service
    assigned | handed_over | trained | in_service ──return──▶ returned ──assign──▶ assigned
    enrolled | assigned | handed_over | trained | in_service | returned ──retire──▶ retiring
    retiring ──(EraseDevice acknowledged) or force_retire──▶ retired
    registered | enrollment_pending ──cancel──▶ retired          (never enrolled: nothing to wipe)

Retirement is two-phase on purpose: the wipe has to reach the device, and the device can only fetch
it while its identity certificate is valid. So `retire` queues EraseDevice and cuts document access
at once (the leader assignment is closed), and the identity certificate is revoked and
`device.retired` emitted (VPN peer removed, verdict, gateway) when the device acknowledges the wipe —
or at once with `force_retire` for a device that will never come back (lost, broken).

Every change writes a HandoverEvent; an action not allowed from the current state raises
TransitionRefused with a message naming the state and the allowed actions.
"""
from __future__ import annotations

import hashlib
import logging
import re
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.hooks import Hooks
from ipad_mdm.outbox import publish
from ipad_mdm.models import Unit
from ipad_mdm.refusal import Refusal
from mdm import Command, Device, EnrollmentToken, IdentityCertificate

from .models import DeviceRecord, HandoverEvent

log = logging.getLogger("console.handover")
LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

STATES = ("registered", "enrollment_pending", "enrolled", "assigned", "handed_over", "trained", "in_service",
          "returned", "retiring", "retired")

# action -> states it may start from -> state it leads to
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "enroll_token": (("registered", "enrollment_pending"), "enrollment_pending"),
    "enrolled": (("registered", "enrollment_pending"), "enrolled"),
    "assign": (("enrolled", "returned"), "assigned"),
    "hand_over": (("assigned",), "handed_over"),
    "training": (("handed_over",), "trained"),
    "in_service": (("trained",), "in_service"),
    "return": (("assigned", "handed_over", "trained", "in_service"), "returned"),
    "retire": (("enrolled", "assigned", "handed_over", "trained", "in_service", "returned"), "retiring"),
    "retired": (("retiring",), "retired"),
    "force_retire": (("retiring", "enrolled", "assigned", "handed_over", "trained", "in_service", "returned"), "retired"),
    "cancel": (("registered", "enrollment_pending"), "retired"),
}

STATE_LABELS = {
    "registered": ("Đã đăng ký thiết bị", "Registered"),
    "enrollment_pending": ("Chờ cài đặt quản lý (MDM)", "Waiting for MDM enrollment"),
    "enrolled": ("Đã cài đặt quản lý (MDM)", "Enrolled in MDM"),
    "assigned": ("Đã gán cho lãnh đạo", "Assigned to a leader"),
    "handed_over": ("Đã bàn giao", "Handed over"),
    "trained": ("Đã hướng dẫn sử dụng", "Training done"),
    "in_service": ("Đang sử dụng", "In service"),
    "returned": ("Đã hoàn trả", "Returned"),
    "retiring": ("Đang xoá dữ liệu để loại bỏ", "Retiring (erase pending)"),
    "retired": ("Đã loại bỏ", "Retired"),
}

ACTION_LABELS = {
    "register": ("Đăng ký thiết bị", "Register device"),
    "adopted": ("Thiết bị đã cài đặt MDM, chưa đăng ký trước", "Enrolled without a prior registration"),
    "enroll_token": ("Tạo mã cài đặt MDM", "Create enrollment token"),
    "enrolled": ("Thiết bị đã cài đặt MDM", "Device enrolled"),
    "assign": ("Gán cho lãnh đạo", "Assign to leader"),
    "hand_over": ("Lập biên bản bàn giao", "Hand over (minute)"),
    "training": ("Xác nhận đã hướng dẫn", "Training done"),
    "in_service": ("Đưa vào sử dụng", "Put in service"),
    "return": ("Nhận hoàn trả (lãnh đạo trả lại)", "Return (hand back)"),
    "retire": ("Loại bỏ (xoá dữ liệu)", "Retire (erase)"),
    "retired": ("Đã xoá dữ liệu, hoàn tất loại bỏ", "Erased, retirement complete"),
    "force_retire": ("Loại bỏ ngay (không chờ xoá)", "Retire now (without erase)"),
    "cancel": ("Huỷ đăng ký", "Cancel registration"),
    "set_unit": ("Xác định đơn vị sử dụng", "Set the unit"),
}

SERIAL_RE = re.compile(r"^[A-Z0-9]{8,20}$")


class TransitionRefused(Refusal):
    """An action that the current state does not allow, or bad input; the message is for the user."""

    def __init__(self, message_vi: str, message_en: str):
        super().__init__(message_en, message_vi)


def allowed_actions(state: str) -> list[str]:
    return [a for a, (sources, _) in TRANSITIONS.items() if state in sources and a not in ("enrolled", "retired")]


def _transition(session: Session, record: DeviceRecord, action: str, *, by: str, note: str = "",
                data: dict | None = None) -> HandoverEvent:
    sources, target = TRANSITIONS[action]
    if record.state not in sources:
        vi_state, en_state = STATE_LABELS.get(record.state, (record.state, record.state))
        vi_act, en_act = ACTION_LABELS.get(action, (action, action))
        nxt = allowed_actions(record.state)
        raise TransitionRefused(
            f"Không thể thực hiện “{vi_act}” khi thiết bị ở trạng thái “{vi_state}”. "
            f"Các bước được phép: {', '.join(ACTION_LABELS[a][0] for a in nxt) or 'không có'}.",
            f"Cannot “{en_act}” while the device is “{en_state}”. "
            f"Allowed: {', '.join(ACTION_LABELS[a][1] for a in nxt) or 'none'}.",
        )
    event = HandoverEvent(record_id=record.id, action=action, from_state=record.state, to_state=target,
                          at=utcnow(), by=by[:128], note=(note or "")[:4000], data=data)
    record.state = target
    record.updated_at = event.at
    session.add(event)
    session.flush()
    _announce(session, record, event)
    log.info("handover record %s (%s): %s %s -> %s by %s", record.id, record.serial_number, action,
             event.from_state, target, by)
    return event


def _announce(session: Session, record: DeviceRecord, event: HandoverEvent, udid: str | None = None) -> None:
    """Every step of the workflow goes out as an event (ipad_mdm.outbox) with the change."""
    if udid is None and record.device_id:
        udid = session.scalar(select(Device.udid).where(Device.id == record.device_id))
    publish(session, "handover.changed", {"udid": udid, "serial_number": record.serial_number, "action": event.action,
                                          "from_state": event.from_state, "to_state": event.to_state,
                                          "leader_id": record.leader_id, "by": event.by})


# ------------------------------------------------------------------ registration and enrollment
def normalise_serial(serial: str) -> str:
    return (serial or "").strip().upper().replace(" ", "")


def register_device(session: Session, *, serial_number: str, model: str, unit, by: str, note: str = "") -> DeviceRecord:
    serial = normalise_serial(serial_number)
    if not SERIAL_RE.match(serial):
        raise TransitionRefused("Số sê-ri phải gồm 8–20 chữ cái in hoa hoặc chữ số.",
                                "The serial number must be 8-20 capital letters or digits.")
    unit_row = unit if isinstance(unit, Unit) else session.get(Unit, unit) if isinstance(unit, int) else \
        session.scalar(select(Unit).where(Unit.code == unit))
    if unit_row is None:
        raise TransitionRefused("Đơn vị không tồn tại.", "Unknown unit.")
    model = (model or "").strip()[:128]
    if not model:
        raise TransitionRefused("Vui lòng nhập kiểu máy (ví dụ iPad Pro 11 inch).", "Enter the model (e.g. iPad Pro 11-inch).")
    open_record = session.scalar(select(DeviceRecord).where(DeviceRecord.serial_number == serial,
                                                            DeviceRecord.state != "retired"))
    if open_record is not None:
        raise TransitionRefused(f"Thiết bị sê-ri {serial} đã được đăng ký (hồ sơ #{open_record.id}).",
                                f"Serial {serial} is already registered (record #{open_record.id}).")
    record = DeviceRecord(serial_number=serial, model=model, unit_id=unit_row.id, state="registered",
                          note=(note or "")[:4000], created_by=by[:128], created_at=utcnow(), updated_at=utcnow())
    session.add(record)
    session.flush()
    session.add(HandoverEvent(record_id=record.id, action="register", from_state=None, to_state="registered",
                              at=record.created_at, by=by[:128], note=record.note))
    session.flush()
    return record


def create_enrollment_token(session: Session, settings, fernet, record: DeviceRecord, *, by: str) -> str:
    """A one-time enrollment URL bound to this serial and unit; returns the URL (for the QR code).
    A previous unused token of the record is revoked so only one QR code is valid at a time."""
    from mdm import service as mdm_service

    if record.state not in TRANSITIONS["enroll_token"][0]:
        _transition(session, record, "enroll_token", by=by)  # raises with the clear message
    if record.enrollment_token_id is not None:
        old = session.get(EnrollmentToken, record.enrollment_token_id)
        if old is not None and old.revoked_at is None and old.challenge_used_at is None:
            old.revoked_at = utcnow()
    unit = session.get(Unit, record.unit_id)
    result = mdm_service.create_enrollment(session, settings, serial_number=record.serial_number,
                                           unit_code=unit.code, created_by=f"console:{by}")
    token = session.scalar(select(EnrollmentToken).where(
        EnrollmentToken.token_sha256 == hashlib.sha256(result["token"].encode()).hexdigest()))
    record.enrollment_token_id = token.id
    record.enrollment_url_enc = fernet.encrypt(result["url"].encode())
    # The expiry goes in data, not in a note: the page shows it in the reader's language and local time.
    _transition(session, record, "enroll_token", by=by, data={"expires_at": result["expires_at"]})
    return result["url"]


def enrollment_url(fernet, record: DeviceRecord) -> str | None:
    if record.enrollment_url_enc is None or record.state != "enrollment_pending":
        return None
    return fernet.decrypt(record.enrollment_url_enc).decode()


def on_devices_enrolled(session: Session, devices: list[Device]) -> None:
    """Hook (devices.enrolled): each new iPad's waiting record is linked by its enrollment token, else by
    serial; an iPad with neither is adopted (below). The candidates of a whole provisioning pass come
    from one query, and the records it adopts are written at one flush."""
    serials = {d.id: normalise_serial(d.serial_number or "") for d in devices}
    tokens = {d.enrollment_token_id for d in devices if d.enrollment_token_id is not None}
    wanted = [DeviceRecord.device_id.in_([d.id for d in devices])]
    if tokens:
        wanted.append(DeviceRecord.enrollment_token_id.in_(tokens))
    if any(serials.values()):
        wanted.append(DeviceRecord.serial_number.in_({s for s in serials.values() if s}))
    candidates = list(session.scalars(select(DeviceRecord).where(or_(*wanted), DeviceRecord.state != "retired")
                                      .order_by(DeviceRecord.id.desc())))
    adopted = []
    for device in devices:
        serial = serials[device.id]
        record = next((r for r in candidates if device.enrollment_token_id is not None
                       and r.enrollment_token_id == device.enrollment_token_id and r.state == "enrollment_pending"), None)
        if record is None and serial:
            # A registered iPad enrolled with any token (CLI, API) is the same iPad: its record goes on.
            record = next((r for r in candidates if r.serial_number == serial
                           and r.state in ("registered", "enrollment_pending")), None)
        if record is None:
            if not any(r.device_id == device.id for r in candidates):  # re-enrollment: its record goes on
                adopted.append(_adopted(session, device))
            continue
        record.device_id = device.id
        record.enrollment_url_enc = None  # used: nothing left to show
        _transition(session, record, "enrolled", by="mdm", note=f"UDID {device.udid}")
    if adopted:
        session.flush()
        for record in adopted:
            log.info("handover record %s adopted for device %s (enrolled without a registration)", record.id,
                     record.device_id)


def _adopted(session: Session, device: Device) -> DeviceRecord:
    """An iPad enrolled with a CLI or API token (or a console token that was not a registration)
    joins the workflow as "enrolled, not yet assigned": every managed iPad is handed over through it.
    Written at the caller's next flush."""
    record = DeviceRecord(serial_number=normalise_serial(device.serial_number or "") or "",
                          model=device.product_name or device.model or "", unit_id=device.unit_id, state="enrolled",
                          device_id=device.id, created_by="mdm", note="")
    event = HandoverEvent(record=record, action="adopted", from_state=None, to_state="enrolled",
                          at=utcnow(), by="mdm", note=f"UDID {device.udid}")
    session.add(record)
    session.add(event)
    _announce(session, record, event, udid=device.udid)
    return record


def set_unit(session: Session, hooks: Hooks, record: DeviceRecord, unit_id: int | None, *, by: str) -> HandoverEvent:
    """The unit an adopted (or misfiled) iPad belongs to; the device's own unit follows, and with
    it the policies that apply: it is evaluated again in this transaction."""
    unit = session.get(Unit, unit_id) if unit_id else None
    if unit is None:
        raise TransitionRefused("Vui lòng chọn đơn vị.", "Please choose a unit.")
    if record.state == "retired":
        raise TransitionRefused("Thiết bị đã loại bỏ, không thay đổi đơn vị.", "The device is retired; its unit stays.")
    old = session.get(Unit, record.unit_id) if record.unit_id is not None else None
    record.unit_id = unit.id
    record.updated_at = utcnow()
    event = HandoverEvent(record_id=record.id, action="set_unit", from_state=record.state, to_state=record.state,
                          at=record.updated_at, by=by[:128],
                          note=f"{old.name_vi if old else '—'} → {unit.name_vi}")
    session.add(event)
    device = device_of(session, record)
    if device is not None and device.unit_id != unit.id:
        from compliance import evaluate_device

        device.unit_id = unit.id
        session.flush()
        evaluate_device(session, hooks, device, trigger="unit_changed")
    session.flush()
    return event


def device_of(session: Session, record: DeviceRecord) -> Device | None:
    return session.get(Device, record.device_id) if record.device_id is not None else None


# ------------------------------------------------------------------ handing over
def assign(session: Session, record: DeviceRecord, leader, *, by: str) -> HandoverEvent:
    from document_gateway import service as gw

    device = device_of(session, record)
    if record.state not in TRANSITIONS["assign"][0]:
        return _transition(session, record, "assign", by=by)  # raises
    if device is None:
        raise TransitionRefused("Thiết bị chưa cài đặt MDM.", "The device has not enrolled yet.")
    try:
        gw.assign_device(session, device, leader, by=f"console:{by}")
    except gw.GatewayError as exc:
        raise TransitionRefused(f"Không gán được: {exc.message('vi')}", f"Cannot assign: {exc}") from None
    record.leader_id = leader.id
    return _transition(session, record, "assign", by=by, note=f"{leader.full_name} (#{leader.id})")


def minute_snapshot(session: Session, record: DeviceRecord, hooks: Hooks | None = None) -> dict:
    """What a handover/return minute prints, frozen at that moment."""
    from document_gateway import Leader

    device = device_of(session, record)
    leader = session.get(Leader, record.leader_id) if record.leader_id else None
    unit = session.get(Unit, record.unit_id) if record.unit_id is not None else None
    leader_unit = session.get(Unit, leader.unit_id) if leader else None
    profiles = []
    for entry in (device.profile_list or []) if device else []:
        profiles.append({"name": entry.get("PayloadDisplayName") or entry.get("PayloadIdentifier", ""),
                         "identifier": entry.get("PayloadIdentifier", "")})
    cert = None
    if device is not None:
        current = [c for c in device.certificates if c.revoked_at is None]
        newest = max(current, key=lambda c: c.not_after, default=None)
        if newest is not None:
            cert = {"serial": newest.serial, "not_after": newest.not_after.isoformat(), "subject": newest.subject}
    return {
        "record_id": record.id,
        "serial_number": record.serial_number,
        "model": (device.model_name if device and device.model_name else record.model),
        "model_number": device.model if device else None,
        "udid": device.udid if device else None,
        "os_version": device.os_version if device else None,
        "device_name": device.device_name if device else None,
        "unit": {"code": unit.code, "name_vi": unit.name_vi, "name_en": unit.name_en} if unit else None,
        "leader": {"id": leader.id, "full_name": leader.full_name, "title": leader.title,
                   "unit_vi": leader_unit.name_vi if leader_unit else ""} if leader else None,
        "profiles": profiles,
        "certificate": cert,
        "at": utcnow().isoformat(),
    }


def _minute_details(data: dict, details: dict | None) -> dict:
    """What the people at the handover state: the IT representative's position, the device's
    condition and accessories (free text, bounded)."""
    for key in ("it_position", "condition", "accessories"):
        value = ((details or {}).get(key) or "").strip()
        data[key] = value[:500]
    return data


def _register_minute(session: Session, event: HandoverEvent) -> None:
    """The next number of this year's minute register (one sequence for handover and return
    minutes; the database's unique (year, number) is the last guard)."""
    from sqlalchemy import func

    if session.get_bind().dialect.name == "postgresql":
        # Two minutes at once: one waits for the other's number (released at commit).
        session.execute(select(func.pg_advisory_xact_lock(0x4D494E55)))
    year = event.at.astimezone(LOCAL_TZ).year
    last = session.scalar(select(func.max(HandoverEvent.minute_number)).where(HandoverEvent.minute_year == year))
    event.minute_year, event.minute_number = year, (last or 0) + 1
    event.data = {**(event.data or {}), "number": event.minute_number}
    session.flush()


def hand_over(session: Session, record: DeviceRecord, *, by: str, by_name: str = "", note: str = "",
              details: dict | None = None, usb_token_ids: tuple[int, ...] = ()) -> HandoverEvent:
    """The minute; the leader's signing USB tokens (if any) go out on the same minute."""
    from document_gateway import Leader
    from usb_tokens import service as tokens

    if record.state not in TRANSITIONS["hand_over"][0]:
        return _transition(session, record, "hand_over", by=by)  # raises
    leader = session.get(Leader, record.leader_id)
    chosen = _tokens(session, usb_token_ids)
    data = _minute_details(minute_snapshot(session, record), details)
    data["kind"] = "handover"
    data["it_officer"] = by_name or by
    data["usb_tokens"] = [tokens.snapshot(t) for t in chosen]
    event = _transition(session, record, "hand_over", by=by, note=note, data=data)
    _register_minute(session, event)
    for token in chosen:
        try:
            tokens.hand_over(session, token, leader, by=by, minute=f"{event.minute_number}/BB-TTTH")
        except tokens.TokenRefused as exc:
            raise TransitionRefused(exc.message("vi"), str(exc)) from None
    return event


def _tokens(session: Session, ids) -> list:
    from usb_tokens import service as tokens

    chosen = []
    for token_id in dict.fromkeys(ids):
        token = tokens.get(session, int(token_id))
        if token is None:
            raise TransitionRefused("Không tìm thấy USB token đã chọn.", "The chosen USB token does not exist.")
        chosen.append(token)
    return chosen


def training_done(session: Session, record: DeviceRecord, *, by: str, note: str = "") -> HandoverEvent:
    return _transition(session, record, "training", by=by, note=note)


def put_in_service(session: Session, record: DeviceRecord, *, by: str, note: str = "") -> HandoverEvent:
    return _transition(session, record, "in_service", by=by, note=note)


def return_device(session: Session, record: DeviceRecord, *, by: str, by_name: str = "", note: str = "",
                  details: dict | None = None, usb_token_ids: tuple[int, ...] = ()) -> HandoverEvent:
    """The leader hands the iPad back: document access ends at once (assignment closed). USB tokens
    the leader hands back with it are on the same minute."""
    from document_gateway import service as gw
    from usb_tokens import service as tokens

    if record.state not in TRANSITIONS["return"][0]:
        return _transition(session, record, "return", by=by)  # raises
    chosen = _tokens(session, usb_token_ids)
    if any(t.holder_leader_id != record.leader_id or t.state != "handed_over" for t in chosen):
        raise TransitionRefused("USB token đã chọn không do lãnh đạo này giữ.",
                                "A chosen USB token is not held by this leader.")
    data = _minute_details(minute_snapshot(session, record), details)
    data["kind"] = "return"
    data["it_officer"] = by_name or by
    data["usb_tokens"] = [tokens.snapshot(t) for t in chosen]
    device = device_of(session, record)
    if device is not None:
        gw.unassign_device(session, device, by=f"console:{by}")
    record.leader_id = None
    event = _transition(session, record, "return", by=by, note=note, data=data)
    _register_minute(session, event)
    for token in chosen:
        tokens.return_token(session, token, by=by, minute=f"{event.minute_number}/BB-TTTH")
    return event


# ------------------------------------------------------------------ retirement
def retire(session: Session, record: DeviceRecord, *, by: str, confirm_serial: str, note: str = "") -> HandoverEvent:
    """Phase one: queue EraseDevice (typed serial must match) and close the leader assignment."""
    from document_gateway import service as gw
    from mdm import commands as mdm_commands

    if record.state not in TRANSITIONS["retire"][0]:
        return _transition(session, record, "retire", by=by)  # raises
    _check_confirmation(record, confirm_serial)
    device = device_of(session, record)
    if device is None:  # pragma: no cover - every state that may retire has a device
        raise TransitionRefused("Hồ sơ chưa gắn với thiết bị.", "The record has no device.")
    try:
        cmd = mdm_commands.enqueue(session, device, "EraseDevice", {}, requested_by=f"console:{by}:retire")
    except mdm_commands.CommandRefused as exc:
        raise TransitionRefused(f"Không gửi được lệnh xoá: {exc}. Dùng “Loại bỏ ngay”.",
                                f"Cannot queue the erase: {exc}. Use “Retire now”.") from None
    record.erase_command_uuid = cmd.uuid
    gw.unassign_device(session, device, by=f"console:{by}")
    record.leader_id = None
    return _transition(session, record, "retire", by=by, note=note, data={"erase_command_uuid": cmd.uuid})


def _check_confirmation(record: DeviceRecord, confirm_serial: str) -> None:
    import hmac

    if not hmac.compare_digest(normalise_serial(confirm_serial).encode(), record.serial_number.encode()):
        raise TransitionRefused("Số sê-ri nhập để xác nhận không khớp; chưa thực hiện.",
                                "The serial number typed to confirm does not match; nothing was done.")


def finalize_retirement(session: Session, hooks: Hooks, device: Device, *, by: str, reason_note: str = "") -> None:
    """Revoke the identity certificate(s), mark the device retired and tell the other packages
    (VPN removes the peer, compliance and the gateway re-decide, profiles stop)."""
    from document_gateway import service as gw
    from mdm import revoke_identity

    for cert in session.scalars(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id,
                                                                  IdentityCertificate.revoked_at.is_(None))):
        revoke_identity(session, cert, "cessationOfOperation")
    gw.unassign_device(session, device, by=f"console:{by}")
    device.enrollment_state = "retired"
    device.push_token = None
    device.push_magic = None
    device.push_pending = False
    session.flush()
    hooks.emit("device.retired", session=session, device=device)
    log.warning("device %s (%s) retired by %s %s", device.udid, device.serial_number, by, reason_note)


def force_retire(session: Session, hooks: Hooks, record: DeviceRecord, *, by: str, confirm_serial: str,
                 note: str = "") -> HandoverEvent:
    if record.state not in TRANSITIONS["force_retire"][0]:
        return _transition(session, record, "force_retire", by=by)  # raises
    _check_confirmation(record, confirm_serial)
    if not (note or "").strip():
        raise TransitionRefused("Vui lòng ghi lý do loại bỏ ngay (ví dụ: thiết bị bị mất).",
                                "Give the reason for retiring without erase (e.g. device lost).")
    device = device_of(session, record)
    if device is not None and device.enrollment_state != "retired":
        finalize_retirement(session, hooks, device, by=by, reason_note=note)
    record.leader_id = None
    return _transition(session, record, "force_retire", by=by, note=note)


def cancel(session: Session, record: DeviceRecord, *, by: str, note: str = "") -> HandoverEvent:
    if record.state not in TRANSITIONS["cancel"][0]:
        return _transition(session, record, "cancel", by=by)  # raises
    if record.enrollment_token_id is not None:
        token = session.get(EnrollmentToken, record.enrollment_token_id)
        if token is not None and token.revoked_at is None:
            token.revoked_at = utcnow()
    record.enrollment_url_enc = None
    return _transition(session, record, "cancel", by=by, note=note)


def on_command_completed(session: Session, hooks: Hooks, device: Device, command: Command) -> None:
    """Hook (command.completed): an acknowledged EraseDevice completes a retirement."""
    if command.request_type != "EraseDevice" or command.status != "acknowledged":
        return
    record = session.scalar(select(DeviceRecord).where(DeviceRecord.device_id == device.id,
                                                       DeviceRecord.state == "retiring"))
    if record is None and not (command.requested_by or "").endswith(":retire"):
        return  # an erase not started by a retirement: the device stays as it is
    if device.enrollment_state != "retired":
        finalize_retirement(session, hooks, device, by=f"mdm:{command.uuid}", reason_note="erase acknowledged")
    if record is not None:
        _transition(session, record, "retired", by="mdm", note=f"EraseDevice {command.uuid} acknowledged")


def retire_unrecorded(session: Session, device: Device, *, by: str) -> Command:
    """EraseDevice from the command page for a device that has no handover record (enrolled outside the
    console): still a retirement, finalised on acknowledgement like the workflow's."""
    from document_gateway import service as gw
    from mdm import commands as mdm_commands

    cmd = mdm_commands.enqueue(session, device, "EraseDevice", {}, requested_by=f"console:{by}:retire")
    gw.unassign_device(session, device, by=f"console:{by}")
    return cmd


def active_record_for_device(session: Session, device_id: int) -> DeviceRecord | None:
    return session.scalar(select(DeviceRecord).where(DeviceRecord.device_id == device_id)
                          .order_by(DeviceRecord.id.desc()).limit(1))
