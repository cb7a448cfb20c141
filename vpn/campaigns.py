"""Migration campaigns: move iPads from VPN provider A to B without ever leaving one without a VPN.

Per device: install B → B's profile acknowledged → B's tunnel seen from the server side (a WireGuard
handshake, the OpenVPN server's client list; a provider without verification counts the install)
after the install → remove A → done. A device that fails a step keeps A, loses the half-installed B,
and is listed with the reason. Pilot units first (units whose stage is "pilot"), then all once an
officer widens the campaign — the ring model of app releases. Pause stops new steps; roll back
reinstalls A where it was removed and then removes B.

Driven by `advance` (the periodic job, and after an officer's action) and `on_command_completed`
(the device's answers). Takes an open session, never commits.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.dispatch import push_after_commit
from ipad_mdm.models import Unit
from ipad_mdm.refusal import Refusal
from mdm import Device, commands

from . import providers, service
from .models import VpnCampaign, VpnCampaignDevice, VpnInstallation, VpnTunnelSighting

log = logging.getLogger(__name__)
BATCH = 200  # devices started per pass: a pass is one short transaction, not the whole fleet
ACTIVE_STEPS = ("installing", "verifying", "removing_source", "rolling_back")


class CampaignError(Refusal):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_campaign", *, vi: str | None = None):
        super().__init__(message, vi)
        self.status, self.code = status, code


def create(session: Session, body: dict, *, by: str) -> VpnCampaign:
    if not isinstance(body, dict):
        raise CampaignError("the request body must be a JSON object", vi="Dữ liệu gửi lên không hợp lệ.")
    name, source, target = body.get("name"), body.get("source"), body.get("target")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 255:
        raise CampaignError("name must be a non-empty string of at most 255 characters",
                            vi="Vui lòng đặt tên đợt chuyển đổi (tối đa 255 ký tự).")
    for label, key in (("source", source), ("target", target)):
        if not isinstance(key, str) or not providers.exists(session, key):
            raise CampaignError(f"{label} must be the key of a VPN provider (see GET /api/v1/vpn/providers)",
                                code="unknown_provider", vi="Vui lòng chọn VPN cũ và VPN mới trong danh sách nhà cung cấp.")
    if source == target:
        raise CampaignError("the target provider is the source provider: nothing to migrate", code="same_provider",
                            vi="VPN mới trùng với VPN cũ: không có gì để chuyển đổi.")
    if source in providers.BUILTIN and target in providers.BUILTIN:
        raise CampaignError("WireGuard and IKEv2 share one profile on the iPad; switch them with the VPN kind setting",
                            code="builtin_pair", vi="WireGuard và IKEv2 dùng chung một hồ sơ trên iPad; vui lòng đổi "
                                                     "bằng thiết lập loại VPN của máy chủ.")
    hours = body.get("verify_hours", 24)
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= 720:
        raise CampaignError("verify_hours must be a whole number of hours from 1 to 720",
                            vi="Thời hạn chờ ghi nhận kết nối phải là số giờ nguyên từ 1 đến 720.")
    busy = session.scalar(select(VpnCampaign.id).where(
        VpnCampaign.state.in_(("running", "paused", "rolling_back")),
        (VpnCampaign.source_key == source) | (VpnCampaign.target_key == source)
        | (VpnCampaign.source_key == target) | (VpnCampaign.target_key == target)).limit(1))
    if busy is not None:
        raise CampaignError(f"campaign {busy} is still moving devices between these providers", 409, "campaign_busy",
                            vi="Một đợt chuyển đổi khác giữa các VPN này vẫn đang thực hiện.")
    row = VpnCampaign(name=name.strip(), source_key=source, target_key=target, verify_hours=hours,
                      created_by=by[:128], created_at=utcnow(), updated_at=utcnow())
    session.add(row)
    session.flush()
    return row


# ------------------------------------------------------------------ installing and removing one provider

def _install(session: Session, instance, device: Device, key: str, by: str) -> str:
    if key in providers.BUILTIN:
        status = service.provision_peer(session, instance, device, kind=key, send_profile=True, requested_by=by)
        return status[key]["profile_command_uuid"]
    row = providers.get(session, key)
    signed = providers.build_profile(session, instance, row, device)
    uuid = commands.enqueue(session, device, "InstallProfile", {"Payload": signed}, requested_by=by).uuid
    settings = providers.app_attributes_settings(row)
    if settings:  # after the profile, in queue order: the apps then have a VPN to point at
        commands.enqueue(session, device, "Settings", settings, requested_by=by)
    return uuid


def install_provider(session: Session, instance, device: Device, key: str, *, by: str) -> str:
    """Put a provider on one iPad outside any campaign (the fleet's current VPN, a single replacement)."""
    if not providers.exists(session, key):
        raise CampaignError(f"unknown VPN provider {key[:64]}", 404, "unknown_provider",
                            vi="Không có nhà cung cấp VPN này.")
    if device.enrollment_state != "enrolled":
        raise CampaignError(f"device {device.udid} is {device.enrollment_state}", 409, "wrong_state",
                            vi="iPad này không còn được quản lý.")
    uuid = _install(session, instance, device, key, by)
    push_after_commit(session, [device.id])
    return uuid


def _remove(session: Session, instance, device: Device, key: str, identifier: str, reason: str, by: str) -> str:
    cmd = commands.enqueue(session, device, "RemoveProfile", {"Identifier": identifier}, requested_by=by)
    service.remove_peer(session, instance, device, reason, requested_by=by, kind=key)
    return cmd.uuid


def _target_identifier(instance, key: str) -> str:
    return providers.profile_identifier(instance.settings.org_identifier, key)


def _verified_by(session: Session, key: str) -> str:
    if key == "wireguard":
        return "wireguard_handshake"
    row = providers.get(session, key)
    return (row.verification or {}).get("kind", "none") if row is not None else "none"


# ------------------------------------------------------------------ the driver

def _enlist(session: Session, campaign: VpnCampaign) -> int:
    """Devices on the source that the campaign does not hold yet (newly enrolled ones too)."""
    have = select(VpnCampaignDevice.device_id).where(VpnCampaignDevice.campaign_id == campaign.id)
    rows = session.execute(
        select(VpnInstallation.device_id, func.min(VpnInstallation.profile_identifier))
        .join(Device, Device.id == VpnInstallation.device_id)
        .where(VpnInstallation.provider_key == campaign.source_key, Device.enrollment_state == "enrolled",
               VpnInstallation.device_id.not_in(have))
        .group_by(VpnInstallation.device_id)).all()
    for device_id, ident in rows:
        session.add(VpnCampaignDevice(campaign_id=campaign.id, device_id=device_id, source_profile=ident,
                                      updated_at=utcnow()))
    return len(rows)


def _set(item: VpnCampaignDevice, step: str, reason: str | None = None, command_uuid: str | None = None) -> None:
    item.step, item.reason, item.command_uuid, item.updated_at = step, reason, command_uuid, utcnow()


def advance(session: Session, instance, campaign: VpnCampaign, now: dt.datetime | None = None) -> dict:
    """One pass: enlist, start the next devices of the current ring, check tunnels, time out."""
    now = now or utcnow()
    done = {"enlisted": 0, "started": 0, "verified": 0, "timed_out": 0}
    if campaign.state != "running":
        return done
    by = f"vpn-campaign:{campaign.id}"
    done["enlisted"] = _enlist(session, campaign)
    session.flush()
    ring = (select(VpnCampaignDevice, Device).join(Device, Device.id == VpnCampaignDevice.device_id)
            .where(VpnCampaignDevice.campaign_id == campaign.id, VpnCampaignDevice.step == "pending"))
    if campaign.stage == "pilot":
        ring = ring.join(Unit, Unit.id == Device.unit_id).where(Unit.stage == "pilot")
    woken: list[int] = []
    for item, device in session.execute(ring.order_by(VpnCampaignDevice.id).limit(BATCH)).all():
        try:
            with session.begin_nested():
                _set(item, "installing", command_uuid=_install(session, instance, device, campaign.target_key, by))
            done["started"] += 1
            woken.append(device.id)
        except Exception as exc:  # this device stays on A; the others go on
            log.warning("campaign %s: installing %s on %s failed: %s", campaign.id, campaign.target_key, device.udid, exc)
            _set(item, "failed", f"install_not_sent: {type(exc).__name__}")
    verification = _verified_by(session, campaign.target_key)
    # The target's latest sighting comes in the same query (one read for the whole ring, not one per iPad).
    waiting = session.execute(
        select(VpnCampaignDevice, Device, VpnTunnelSighting.seen_at)
        .join(Device, Device.id == VpnCampaignDevice.device_id)
        .outerjoin(VpnTunnelSighting, and_(VpnTunnelSighting.device_id == VpnCampaignDevice.device_id,
                                           VpnTunnelSighting.provider_key == campaign.target_key))
        .where(VpnCampaignDevice.campaign_id == campaign.id, VpnCampaignDevice.step == "verifying")).all()
    for item, device, seen in waiting:
        # Gateways report whole seconds: a handshake in the second of the install counts.
        if verification == "none" or (seen is not None and seen >= item.installed_at.replace(microsecond=0)):
            item.tunnel_seen_at = seen if verification != "none" else None
            _set(item, "removing_source", command_uuid=_remove(
                session, instance, device, campaign.source_key, item.source_profile,
                f"migrated to {campaign.target_key}", by))
            done["verified"] += 1
            woken.append(device.id)
        elif now >= item.installed_at + dt.timedelta(hours=campaign.verify_hours):
            _remove(session, instance, device, campaign.target_key, _target_identifier(instance, campaign.target_key),
                    "tunnel never seen", by)
            _set(item, "failed", "tunnel_not_seen")
            done["timed_out"] += 1
            woken.append(device.id)
    if woken:
        push_after_commit(session, woken)
    _maybe_finish(session, campaign)
    campaign.updated_at = now
    return done


def _step_counts(session: Session, campaign: VpnCampaign) -> dict[str, int]:
    return dict(session.execute(select(VpnCampaignDevice.step, func.count()).where(
        VpnCampaignDevice.campaign_id == campaign.id).group_by(VpnCampaignDevice.step)).all())


def _maybe_finish(session: Session, campaign: VpnCampaign) -> None:
    steps = _step_counts(session, campaign)
    if campaign.state == "rolling_back" and not any(steps.get(s) for s in ACTIVE_STEPS):
        campaign.state = "rolled_back"
    elif (campaign.state == "running" and campaign.stage == "all" and steps
          and not steps.get("pending") and not any(steps.get(s) for s in ACTIVE_STEPS)):
        campaign.state = "done"


def on_command_completed(session: Session, instance, device: Device, command) -> None:
    """A device answered an InstallProfile / RemoveProfile a campaign sent."""
    item = session.scalar(select(VpnCampaignDevice).where(VpnCampaignDevice.command_uuid == command.uuid))
    if item is None:
        return
    campaign = session.get(VpnCampaign, item.campaign_id)
    ok = command.status == "acknowledged"
    first = (command.error_chain or [{}])[0] if not ok else {}
    why = f"{first.get('ErrorDomain', '')} {first.get('ErrorCode', '')}".strip()
    by = f"vpn-campaign:{campaign.id}"
    if item.step == "installing":
        if ok:
            item.installed_at = utcnow()
            _set(item, "verifying")
        else:  # B never arrived: the device is on A alone, as before
            service.remove_peer(session, instance, device, "install refused", requested_by=by, kind=campaign.target_key)
            _set(item, "failed", f"install_failed: {why}"[:255])
    elif item.step == "removing_source":
        if ok:
            _set(item, "done")
        else:
            _set(item, "failed", f"source_not_removed: {why}"[:255])
    elif item.step == "rolling_back":
        if command.request_type == "InstallProfile":
            if ok:  # A is back: now B may go
                _set(item, "rolling_back", command_uuid=_remove(
                    session, instance, device, campaign.target_key, _target_identifier(instance, campaign.target_key),
                    "campaign rolled back", by))
            else:
                _set(item, "failed", f"source_not_reinstalled: {why}"[:255])
        else:
            _set(item, "rolled_back", None if ok else f"target_not_removed: {why}"[:255])
    _maybe_finish(session, campaign)


# ------------------------------------------------------------------ an officer's actions

def set_paused(campaign: VpnCampaign, paused: bool) -> None:
    allowed = ("running",) if paused else ("paused",)
    if campaign.state not in allowed:
        raise CampaignError(f"the campaign is {campaign.state}", 409, "wrong_state",
                            vi="Đợt chuyển đổi đã đổi trạng thái; vui lòng xem lại.")
    campaign.state, campaign.updated_at = ("paused" if paused else "running"), utcnow()


def widen(campaign: VpnCampaign) -> None:
    if campaign.stage != "pilot" or campaign.state not in ("running", "paused"):
        raise CampaignError("only a running or paused campaign still in its pilot can be widened to all units",
                            409, "wrong_state", vi="Chỉ mở rộng được đợt chuyển đổi đang ở giai đoạn thí điểm.")
    campaign.stage, campaign.updated_at = "all", utcnow()


def roll_back(session: Session, instance, campaign: VpnCampaign) -> dict:
    """Every device back to A: A reinstalled where it was removed (then B removed), B removed elsewhere."""
    if campaign.state in ("rolled_back", "rolling_back"):
        raise CampaignError(f"the campaign is already {campaign.state.replace('_', ' ')}", 409, "wrong_state",
                            vi="Đợt chuyển đổi đã quay lại VPN cũ.")
    source_buildable = campaign.source_key in providers.BUILTIN or providers.get(session, campaign.source_key)
    by = f"vpn-campaign:{campaign.id}"
    counts = {"reinstalling_source": 0, "removing_target": 0, "untouched": 0, "source_not_rebuildable": 0}
    campaign.state, campaign.updated_at = "rolling_back", utcnow()
    target_ident = _target_identifier(instance, campaign.target_key)
    woken: list[int] = []
    rows = session.execute(select(VpnCampaignDevice, Device).join(Device, Device.id == VpnCampaignDevice.device_id)
                           .where(VpnCampaignDevice.campaign_id == campaign.id)).all()
    for item, device in rows:
        b_gone = item.step == "failed" and not (item.reason or "").startswith("source_not_removed")
        if item.step in ("pending", "rolled_back") or b_gone:  # A was never touched and B is not there
            _set(item, "rolled_back", item.reason)
            counts["untouched"] += 1
        elif item.step in ("done", "removing_source"):
            if not source_buildable:
                _set(item, "failed", "source_not_rebuildable")
                counts["source_not_rebuildable"] += 1
                continue
            _set(item, "rolling_back", command_uuid=_install(session, instance, device, campaign.source_key, by))
            counts["reinstalling_source"] += 1
        else:  # installing, verifying, or A's removal refused: A is still there, B goes
            _set(item, "rolling_back", command_uuid=_remove(
                session, instance, device, campaign.target_key, target_ident, "campaign rolled back", by))
            counts["removing_target"] += 1
        if item.step == "rolling_back":
            woken.append(device.id)
    if woken:
        push_after_commit(session, woken)
    _maybe_finish(session, campaign)
    return counts


# ------------------------------------------------------------------ reading

def progress(session: Session, campaign: VpnCampaign, *, failed_limit: int = 200) -> dict:
    steps = _step_counts(session, campaign)
    per_unit: dict = {}
    for unit, step, n in session.execute(
            select(Unit.code, VpnCampaignDevice.step, func.count())
            .select_from(VpnCampaignDevice).join(Device, Device.id == VpnCampaignDevice.device_id)
            .outerjoin(Unit, Unit.id == Device.unit_id)
            .where(VpnCampaignDevice.campaign_id == campaign.id).group_by(Unit.code, VpnCampaignDevice.step)):
        per_unit.setdefault(unit or "", {})[step] = n
    failed = [{"udid": udid, "serial_number": serial, "reason": reason, "step_at": at.isoformat()}
              for udid, serial, reason, at in session.execute(
                  select(Device.udid, Device.serial_number, VpnCampaignDevice.reason, VpnCampaignDevice.updated_at)
                  .join(Device, Device.id == VpnCampaignDevice.device_id)
                  .where(VpnCampaignDevice.campaign_id == campaign.id, VpnCampaignDevice.step == "failed")
                  .order_by(VpnCampaignDevice.id).limit(failed_limit))]
    return {"id": campaign.id, "name": campaign.name, "source": campaign.source_key, "target": campaign.target_key,
            "stage": campaign.stage, "state": campaign.state, "verify_hours": campaign.verify_hours,
            "created_by": campaign.created_by, "created_at": campaign.created_at.isoformat(),
            "steps": steps, "units": per_unit, "failed": failed}


def running(session: Session) -> list[VpnCampaign]:
    """Campaigns the periodic pass moves (a roll-back moves on the iPads' answers alone)."""
    return list(session.scalars(select(VpnCampaign).where(VpnCampaign.state == "running").order_by(VpnCampaign.id)))


def device_campaign_rows(session: Session, device_id: int) -> list[dict]:
    return [{"campaign": c.id, "step": i.step, "reason": i.reason}
            for i, c in session.execute(select(VpnCampaignDevice, VpnCampaign)
                                        .join(VpnCampaign, VpnCampaign.id == VpnCampaignDevice.campaign_id)
                                        .where(VpnCampaignDevice.device_id == device_id))]


