"""What VPN each iPad has installed, recognised from its ProfileList answer.

Every profile entry with a `com.apple.vpn.managed` payload becomes a VpnInstallation naming its
provider (built-in WireGuard / IKEv2, a defined provider by its profile identifier or one of the
provider's `recognise` patterns, else "unknown") and whether this server installed it. A profile
gone from the list is gone from the table: the list is the device's whole truth at that moment.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipad_mdm.db import among, utcnow
from ipad_mdm.mobileconfig import WIREGUARD_IOS_BUNDLE_ID
from mdm import Device

from . import providers
from .models import VpnInstallation, VpnProvider, VpnTunnelSighting


def update(session: Session, org_identifier: str, device: Device) -> dict[str, str]:
    """Refresh the device's rows from its stored ProfileList; returns {profile identifier: provider}."""
    listed = device.profile_list if isinstance(device.profile_list, list) else []
    defined = list(session.scalars(select(VpnProvider)))
    found: dict[str, tuple[str, bool, str | None]] = {}
    for entry in listed:
        if not isinstance(entry, dict) or not isinstance(entry.get("PayloadIdentifier"), str):
            continue
        hit = providers.recognise(org_identifier, defined, entry)
        if hit is not None:
            uuid = entry.get("PayloadUUID") if isinstance(entry.get("PayloadUUID"), str) else None
            found[entry["PayloadIdentifier"][:255]] = (hit[0][:64], hit[1], uuid)
    now = utcnow()
    rows = {r.profile_identifier: r for r in session.scalars(
        select(VpnInstallation).where(VpnInstallation.device_id == device.id))}
    for ident, row in rows.items():
        if ident not in found:
            session.delete(row)
    for ident, (key, ours, uuid) in found.items():
        row = rows.get(ident)
        if row is None:
            session.add(VpnInstallation(device_id=device.id, profile_identifier=ident, provider_key=key,
                                        managed_by_us=ours, profile_uuid=uuid, first_seen_at=now, last_seen_at=now))
        else:
            row.provider_key, row.managed_by_us, row.profile_uuid, row.last_seen_at = key, ours, uuid, now
    return {ident: v[0] for ident, v in found.items()}


_BUILTIN_APPS = {"wireguard": WIREGUARD_IOS_BUNDLE_ID}


def installed(session: Session, device_id: int) -> list[dict]:
    """The device's VPN configurations with their provider, whether we installed them, and the version of
    the VPN app that runs them (from the device's last InstalledApplicationList)."""
    device = session.get(Device, device_id)
    apps = {a.get("Identifier"): a.get("ShortVersion") or a.get("Version")
            for a in (device.installed_applications if device and isinstance(device.installed_applications, list) else [])
            if isinstance(a, dict)}
    subtypes = dict(session.execute(select(VpnProvider.key, VpnProvider.vpn_subtype)).all())
    return [{"profile_identifier": r.profile_identifier, "provider": r.provider_key, "managed_by_us": r.managed_by_us,
             "app_version": apps.get(subtypes.get(r.provider_key) or _BUILTIN_APPS.get(r.provider_key)),
             "last_seen_at": r.last_seen_at.isoformat()}
            for r in session.scalars(select(VpnInstallation).where(VpnInstallation.device_id == device_id)
                                     .order_by(VpnInstallation.profile_identifier))]


def installed_providers(session: Session, device_id: int) -> set[str]:
    return set(session.scalars(select(VpnInstallation.provider_key).where(VpnInstallation.device_id == device_id)))


def installed_providers_of(session: Session, device_ids: list[int]) -> dict[int, set[str]]:
    """installed_providers for many devices: device id -> keys (devices with none are left out)."""
    out: dict[int, set[str]] = {}
    for device_id, key in session.execute(select(VpnInstallation.device_id, VpnInstallation.provider_key)
                                          .where(among(session, VpnInstallation.device_id, device_ids))):
        out.setdefault(device_id, set()).add(key)
    return out


def facts(session: Session, device_ids: list[int]) -> dict[int, dict]:
    """For compliance: {device id: {"providers": set of keys installed, "seen": {key: last tunnel sighting}}}."""
    out: dict[int, dict] = {d: {"providers": set(), "seen": {}} for d in device_ids}
    if not device_ids:
        return out
    for device_id, key in session.execute(select(VpnInstallation.device_id, VpnInstallation.provider_key)
                                          .where(VpnInstallation.device_id.in_(device_ids))):
        out[device_id]["providers"].add(key)
    for device_id, key, at in session.execute(select(VpnTunnelSighting.device_id, VpnTunnelSighting.provider_key,
                                                     VpnTunnelSighting.seen_at)
                                              .where(VpnTunnelSighting.device_id.in_(device_ids))):
        out[device_id]["seen"][key] = at
    return out


def counts_by_provider(session: Session) -> dict[str, int]:
    """Devices per installed provider (a device with two VPNs counts for both)."""
    rows = session.execute(select(VpnInstallation.provider_key, func.count(func.distinct(VpnInstallation.device_id)))
                           .group_by(VpnInstallation.provider_key))
    return {key: n for key, n in rows}

