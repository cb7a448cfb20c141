"""What a verdict transition does: notify, VPN cut/restore, gateway block, lock, Lost Mode.

Actions (the union over the applicable policies) run once per transition, inside the
transaction that records it, and each one's outcome is written into the transition row
truthfully. Some actions are carried out by other packages subscribed to verdict.changed
under the action's name (the VPN package subscribes as "cut_vpn"): their outcome is what the
subscriber reported ("done", "not_applicable", or "failed" with the reason), and a failed one
is retried by the compliance.retry_actions job until it succeeds.
"""
from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from ipad_mdm.dispatch import push_after_commit
from ipad_mdm.notify import Notification, send_after_commit
from mdm import Device, commands as command_queue

from .verdicts import VerdictView

log = logging.getLogger("compliance")

FAILING_STATES = ("grace", "non_compliant", "blocked")
# Actions another package carries out by subscribing to verdict.changed under this name.
DELEGATED_ACTIONS = ("cut_vpn",)

LOCK_MESSAGE_VI = ("Thiết bị đã bị khoá do không tuân thủ chính sách bảo mật quá thời hạn cho phép. "
                   "Vui lòng liên hệ bộ phận Công nghệ thông tin.")
LOST_MODE_MESSAGE_VI = ("Thiết bị đã được chuyển sang Chế độ mất do vi phạm chính sách bảo mật quá thời hạn. "
                        "Vui lòng liên hệ bộ phận Công nghệ thông tin để được hỗ trợ.")




def announce(session, hooks, device, before, after, taken: list[dict]) -> list[dict]:
    """Emit verdict.changed; fold each subscriber's outcome into the transition's actions.

    A delegated action (cut_vpn) takes the status its implementing subscriber reported; the
    other subscribers (cache invalidation, …) are listed as verdict.changed outcomes."""
    return _fold(taken, hooks.emit("verdict.changed", session=session, device=device, previous=before, verdict=after))


def announce_many(session, hooks, pending: list) -> None:
    """announce() for the transitions of a bulk pass, in their order, each one's actions written into its
    transition row: `pending` holds (row, device, before, after, taken). The subscribers that take
    batches (the VPN's cut) run once for all of them (Hooks.emit_many)."""
    if not pending:
        return
    outcomes = hooks.emit_many("verdict.changed", [{"device": device, "previous": before, "verdict": after}
                                                   for _row, device, before, after, _taken in pending], session=session)
    for (row, _device, _before, _after, taken), outs in zip(pending, outcomes, strict=True):
        row.actions = _fold(taken, outs)
        row.actions_pending = any(a.get("status") == "failed" for a in row.actions)


def _fold(taken: list[dict], outcomes: list[dict]) -> list[dict]:
    by_name = {o["subscriber"]: o for o in outcomes}
    for action in taken:
        outcome = by_name.pop(action["action"], None) if action["action"] in DELEGATED_ACTIONS else None
        if outcome is not None:
            action.update({k: v for k, v in outcome.items() if k != "subscriber"})
            action["attempts"] = 1
    return taken + [{"action": "verdict.changed", **o} for o in by_name.values()]


def run_actions(session: Session, device: Device, eff, from_state: str | None, to_state: str,
                 view: VerdictView, result) -> list[dict]:
    acts = eff.actions
    taken: list[dict] = []
    was_failing = from_state in FAILING_STATES
    if "notify" in acts and (to_state in FAILING_STATES or was_failing):
        taken.append(_notify(session, device, from_state, to_state, view, acts["notify"]))
    if "cut_vpn" in acts:
        # "requested" until the VPN package reports (announce): done / not_applicable / failed.
        if to_state in ("non_compliant", "blocked"):
            taken.append({"action": "cut_vpn", "status": "requested", "request": "cut"})
        elif to_state == "compliant" and was_failing:
            taken.append({"action": "cut_vpn", "status": "requested", "request": "restore"})
    if "block_gateway" in acts:
        if to_state in ("non_compliant", "blocked", "unknown"):
            taken.append({"action": "block_gateway", "status": "deny"})
        elif to_state == "compliant" and was_failing:
            taken.append({"action": "block_gateway", "status": "allow"})
    if to_state == "blocked":
        if "lock_device" in acts:
            opt = acts["lock_device"]
            params = {"Message": opt.get("message", LOCK_MESSAGE_VI)}
            if opt.get("phone_number"):
                params["PhoneNumber"] = opt["phone_number"]
            taken.append(_enqueue(session, device, "DeviceLock", params, result))
        if "lost_mode" in acts:
            opt = acts["lost_mode"]
            params = {"Message": opt.get("message", LOST_MODE_MESSAGE_VI)}
            for key, name in (("phone_number", "PhoneNumber"), ("footnote", "Footnote")):
                if opt.get(key):
                    params[name] = opt[key]
            taken.append(_enqueue(session, device, "EnableLostMode", params, result))
    return taken


def _enqueue(session, device, request_type, params, result) -> dict:
    try:
        cmd = command_queue.enqueue(session, device, request_type, params, requested_by="compliance")
    except command_queue.CommandRefused as exc:
        return {"action": "lock_device" if request_type == "DeviceLock" else "lost_mode", "status": "skipped",
                "detail": str(exc)}
    result.push_needed = True
    push_after_commit(session, [device.id])  # when the caller's session carries a dispatcher
    return {"action": "lock_device" if request_type == "DeviceLock" else "lost_mode", "status": "enqueued",
            "command": request_type, "command_uuid": cmd.uuid}


_STATE_VI = {"compliant": "tuân thủ", "grace": "trong thời hạn khắc phục", "non_compliant": "không tuân thủ",
             "blocked": "bị chặn", "unknown": "chưa xác định", None: "mới"}


def _notify(session, device, from_state, to_state, view: VerdictView, option: dict) -> dict:
    name = device.device_name or device.serial_number or device.udid
    subject = f"[iPad MDM] {name}: {_STATE_VI[from_state]} → {_STATE_VI[to_state]} / {from_state or 'new'} → {to_state}"
    lines = [f"Thiết bị / Device: {name} (UDID {device.udid}, serial {device.serial_number or '-'})",
             f"Trạng thái / State: {from_state or 'new'} → {to_state}"]
    if view.deadline is not None:
        lines.append(f"Hạn chót / Deadline: {view.deadline.strftime('%Y-%m-%d %H:%M UTC')}")
    lines += [f"- {vi} / {en}" for vi, en in zip(view.reasons_vi, view.reasons_en)]
    recipients = tuple(option.get("recipients", ()))
    log.warning("compliance notify: %s | %s", subject, " | ".join(view.reasons_en) or "-")
    send_after_commit(session, Notification(subject, "\n".join(lines), recipients, device.udid, to_state))
    return {"action": "notify", "status": "queued", "recipients": list(recipients)}


def retry_transition(session: Session, hooks, device: Device, row) -> str:
    """Retry the failed delegated actions / subscribers of one transition. Returns "done",
    "failed" (still failing; retried next time) or "superseded" (the device has moved on)."""
    from .verdicts import current_verdict

    view = current_verdict(session, device.id) if device is not None else None
    actions = [dict(a) for a in row.actions or ()]
    if view is None or view.state != row.to_state:
        for a in actions:
            if a.get("status") == "failed":
                a["status"] = "superseded"
        row.actions, row.actions_pending = actions, False
        return "superseded"
    names = {a.get("subscriber") or a["action"] for a in actions if a.get("status") == "failed"}
    outcomes = {o["subscriber"]: o for o in hooks.emit_to("verdict.changed", names, session=session, device=device,
                                                         previous=None, verdict=view)}
    for a in actions:
        name = a.get("subscriber") or a["action"]
        if a.get("status") == "failed" and name in outcomes:
            a.update({k: v for k, v in outcomes[name].items() if k != "subscriber"})
            a["attempts"] = a.get("attempts", 1) + 1
            if a["status"] != "failed":
                a.pop("detail", None)
    row.actions = actions
    row.actions_pending = any(a.get("status") == "failed" for a in actions)
    if row.actions_pending:
        log.warning("compliance: action of %s still failing: %s", device.udid,
                    "; ".join(a.get("detail", "") for a in actions if a.get("status") == "failed"))
        return "failed"
    log.info("compliance: failed action of %s now done", device.udid)
    return "done"
