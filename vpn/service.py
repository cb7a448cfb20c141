"""VPN operations on one device, inside the caller's transaction.

Every operation only changes database rows and then asks for the gateway
config to be regenerated after commit (serverconf.sync_after_commit), so a
rolled-back transaction never reaches the gateway.
"""
from __future__ import annotations

import datetime as dt
import logging

from cryptography.hazmat.primitives import hashes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipad_mdm.db import among, utcnow
from ipad_mdm.timefmt import iso
from mdm import commands, protocol
from mdm import Device

from . import gateways, keys, pool, vpnprofile
from .models import VpnCertificate, VpnEvent, WireGuardPeer
from .serverconf import remove_after_commit, sync_after_commit
from .settings import VpnSettings, vpn_settings

log = logging.getLogger(__name__)

CUT_VERDICTS = ("non_compliant", "blocked")
RESTORE_VERDICTS = ("compliant",)


class VpnError(Exception):
    """An operation that cannot be done; `status` is the HTTP status the API answers with."""

    status = 400


class NoPeer(VpnError):
    status = 404


class WrongState(VpnError):
    status = 409



def _event(session: Session, device: Device, kind: str, event: str, reason: str | None, by: str | None,
           address: str | None = None) -> None:
    session.add(VpnEvent(device_id=device.id, kind=kind, event=event, reason=(reason or None) and reason[:255],
                         by=(by or None) and by[:128], address=address, at=utcnow()))


def _peer(session: Session, device: Device) -> WireGuardPeer | None:
    return session.scalar(select(WireGuardPeer).where(WireGuardPeer.device_id == device.id))


_ALL = object()


def _live_certs(session: Session, device: Device, provider=_ALL) -> list[VpnCertificate]:
    """Live client certificates: of every provider, or of one (None: the built-in IKEv2)."""
    stmt = select(VpnCertificate).where(VpnCertificate.device_id == device.id,
                                        VpnCertificate.state.in_(("active", "cut")))
    if provider is not _ALL:
        stmt = stmt.where(VpnCertificate.provider_key.is_(None) if provider is None
                          else VpnCertificate.provider_key == provider)
    return list(session.scalars(stmt.order_by(VpnCertificate.id)))


def _cert_kind(cert: VpnCertificate) -> str:
    return cert.provider_key or "ikev2"


# ------------------------------------------------------------------ provisioning

def provision_peer(session: Session, instance, device: Device, *, kind: str | None = None, rekey: bool = False,
                   send_profile: bool = True, requested_by: str = "vpn", report: bool = True) -> dict | None:
    """Create (or re-create) the device's VPN access and queue its signed profile.

    WireGuard: new keys + an address from the pool; an existing live peer keeps
    its keys unless `rekey` (re-enrollment: the old key lived on a wiped
    installation). A cut peer stays cut. IKEv2: a new client certificate; the
    previous one is revoked. Returns peer_status() (three queries), or None when not `report`.
    """
    if device.enrollment_state in ("retired", "checked_out"):
        raise WrongState(f"device {device.udid} is {device.enrollment_state}; it gets no VPN access")
    vs = vpn_settings(instance)
    kind = kind or vs.kind_for(device)
    if kind == "ikev2":
        _provision_ikev2(session, instance, vs, device, send_profile=send_profile, requested_by=requested_by)
    else:
        _provision_wireguard(session, instance, vs, device, rekey=rekey, send_profile=send_profile,
                             requested_by=requested_by)
    sync_after_commit(session, instance)
    return peer_status(session, device) if report else None


def _fresh_keys() -> tuple[str, str, str]:
    """(private key, preshared key, public key) of a new peer."""
    private, public = keys.generate_keypair()
    return private, keys.generate_psk(), public


def _seal(fernet, secret: str) -> str:
    return fernet.encrypt(secret.encode("ascii")).decode("ascii")


def _new_keys(peer: WireGuardPeer, fernet) -> tuple[str, str]:
    private, psk, peer.public_key = _fresh_keys()
    peer.private_key_enc, peer.preshared_key_enc = _seal(fernet, private), _seal(fernet, psk)
    return private, psk


def _provision_wireguard(session: Session, instance, vs: VpnSettings, device: Device, *, rekey: bool,
                         send_profile: bool, requested_by: str) -> WireGuardPeer:
    fernet = instance.fernet()
    peer = _peer(session, device)
    old_key = peer.public_key if peer is not None and peer.state != "removed" else None
    now = utcnow()
    # The peer names its profile's command before the row is written: no UPDATE of the peer after it.
    command_uuid = protocol.new_command_uuid() if send_profile else None
    if peer is None:
        event = "created"
        row, private, psk = _new_peer_row(fernet, device, now, command_uuid)
        try:
            peer = pool.insert_peer(session, vs, **row)
        except pool.PeerExists:
            raise WrongState(f"device {device.udid} got its VPN peer from another request at the same time") from None
    elif peer.state == "removed":
        event = "created"
        peer.state, peer.cut_by, peer.reason = "active", None, None
        peer.created_at, peer.cut_at, peer.restored_at, peer.removed_at = now, None, None, None
        private, psk = _new_keys(peer, fernet)
        pool.assign_address(session, vs, peer)
    else:
        event = "rekeyed" if rekey else None
        if rekey:
            private, psk = _new_keys(peer, fernet)
        else:
            private = fernet.decrypt(peer.private_key_enc.encode("ascii")).decode("ascii")
            psk = fernet.decrypt(peer.preshared_key_enc.encode("ascii")).decode("ascii")
        if peer.address_v4 is None or not _in_pool(vs, peer.address_v4):  # pool was reconfigured
            pool.assign_address(session, vs, peer)
    peer.updated_at = now
    gateways.note(session, instance, upsert=(device.id,), remove=tuple(k for k in (old_key,) if k and k != peer.public_key))
    if event:
        _peer_event(session, device, peer, event, requested_by)
    if send_profile:
        peer.profile_command_uuid = command_uuid
        _queue_profile(session, instance, vs, device, peer, private, psk, requested_by)
        session.flush()  # callers read the command back
    return peer


def _new_peer_row(fernet, device: Device, now, command_uuid: str | None) -> tuple[dict, str, str]:
    """The row of a new active peer (fresh keys, sealed), and its private and preshared keys."""
    private, psk, public = _fresh_keys()
    row = dict(device_id=device.id, created_at=now, updated_at=now, state="active", public_key=public,
               private_key_enc=_seal(fernet, private), preshared_key_enc=_seal(fernet, psk),
               profile_command_uuid=command_uuid)
    return row, private, psk


def _peer_event(session: Session, device: Device, peer: WireGuardPeer, event: str, requested_by: str) -> None:
    _event(session, device, "wireguard", event, None, requested_by, peer.address_v4)
    log.info("VPN peer %s for device %s: %s, address %s", peer.public_key, device.udid, event, peer.address_v4)


def _queue_profile(session: Session, instance, vs: VpnSettings, device: Device, peer: WireGuardPeer, private: str,
                   psk: str, requested_by: str) -> None:
    """The peer's signed VPN profile, queued as the InstallProfile the peer names."""
    wg_quick = vpnprofile.client_config(
        private_key=private, address_v4=peer.address_v4, address_v6=peer.address_v6,
        server_public_key=keys.server_public_key(instance.settings.secrets_dir), preshared_key=psk, vs=vs)
    signed = vpnprofile.wireguard_profile(instance, vs, device_udid=device.udid, public_key=peer.public_key,
                                          wg_quick=wg_quick)
    commands.queue(session, device, "InstallProfile", {"Payload": signed}, requested_by=requested_by,
                   command_uuid=peer.profile_command_uuid)
    log.info("VPN profile for device %s queued as command %s", device.udid, peer.profile_command_uuid)


def provision_enrolled(session: Session, instance, devices: list[Device], *, requested_by: str = "enrollment") -> None:
    """VPN access for a provisioning pass's new enrollments (devices.enrolled), set-based: the peers
    the batch has are read in one query, the new WireGuard peers written in one INSERT, their events and
    signed profiles' commands at one flush. A device that already has a peer (re-enrollment: rekeyed),
    gets IKEv2, or whose random address was taken meanwhile takes provision_peer, one by one."""
    vs = vpn_settings(instance)
    devices = [d for d in devices if d.enrollment_state not in ("retired", "checked_out")]
    if not devices:
        return
    have = set(session.scalars(select(WireGuardPeer.device_id).where(
        WireGuardPeer.device_id.in_([d.id for d in devices]))))
    fresh = [d for d in devices if d.id not in have and vs.kind_for(d) != "ikev2"]
    fernet, now, secrets_of, rows = instance.fernet(), utcnow(), {}, []
    for device in fresh:
        row, private, psk = _new_peer_row(fernet, device, now, protocol.new_command_uuid())
        rows.append(row)
        secrets_of[device.id] = (private, psk)
    peers = pool.insert_peers(session, vs, rows)
    for device in fresh:
        peer = peers.get(device.id)
        if peer is None:
            continue
        _peer_event(session, device, peer, "created", requested_by)
        _queue_profile(session, instance, vs, device, peer, *secrets_of[device.id], requested_by)
    if peers:
        gateways.note(session, instance, upsert=tuple(peers))
        sync_after_commit(session, instance)
    for device in devices:
        if device.id not in peers:
            provision_peer(session, instance, device, rekey=True, requested_by=requested_by, report=False)


def _in_pool(vs: VpnSettings, address: str) -> bool:
    import ipaddress

    return ipaddress.IPv4Address(address) in vs.network


def _provision_ikev2(session: Session, instance, vs: VpnSettings, device: Device, *, send_profile: bool,
                     requested_by: str) -> VpnCertificate:
    now = utcnow()
    previous = _live_certs(session, device, None)
    held = any(c.state == "cut" for c in previous)
    for old in previous:  # one identity per device: the new certificate supersedes
        old.state, old.removed_at, old.reason = "removed", now, "superseded"
    cert, key, local_id = vpnprofile.issue_vpn_certificate(instance, vs, device_udid=device.udid)
    row = VpnCertificate(
        device_id=device.id, serial=f"{cert.serial_number:x}", sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        local_identifier=local_id, not_after=cert.not_valid_after_utc, issued_at=now,
        state="cut" if held else "active", cut_at=now if held else None,
        cut_by=next((c.cut_by for c in previous if c.state == "cut"), None) if held else None,
    )
    session.add(row)
    session.flush()
    _event(session, device, "ikev2", "created" if not previous else "rekeyed", None, requested_by)
    log.info("IKEv2 certificate %s issued for device %s", row.serial, device.udid)
    if send_profile:
        signed = vpnprofile.ikev2_profile(instance, vs, device_udid=device.udid, cert=cert, key=key, local_id=local_id)
        cmd = commands.enqueue(session, device, "InstallProfile", {"Payload": signed}, requested_by=requested_by)
        row.profile_command_uuid = cmd.uuid
    return row


# ------------------------------------------------------------------ cut / restore / remove

def cut_peer(session: Session, instance, device: Device, reason: str, *, by: str = "manual",
             requested_by: str | None = None) -> dict:
    """Take the device off the gateway at once (keys and address are kept for a restore).

    `by` is "compliance" or "manual": a manual cut is not undone by a later
    compliant verdict. Cutting an already cut peer only upgrades a compliance
    cut to a manual one (no second event, so reports count each cut once).
    """
    if cut_peers(session, instance, [(device, reason)], by=by, requested_by=requested_by)[device.id] is None:
        raise NoPeer(f"device {device.udid} has no VPN access")
    return peer_status(session, device)


def cut_peers(session: Session, instance, cuts: list[tuple[Device, str]], *, by: str = "compliance",
              requested_by: str | None = None) -> dict[int, list[str] | None]:
    """cut_peer for many devices at once (a compliance pass): the same changes, events and log lines,
    from two reads for all of them, with one removal from the live interface and one regeneration.
    `cuts`: (device, reason); a device named again (a second failing step of one evaluation) is cut
    once. Returns per device id the kinds of VPN access it has, as peer_status names them (the
    wireguard peer, the latest IKEv2 certificate, then each provider's, unless removed); None for a
    device without any VPN access (where cut_peer raises NoPeer)."""
    ids = sorted({device.id for device, _reason in cuts})
    peers = {p.device_id: p for p in session.scalars(select(WireGuardPeer).where(among(session, WireGuardPeer.device_id, ids)))}
    certs: dict[int, list[VpnCertificate]] = {}
    for cert in session.scalars(select(VpnCertificate).where(among(session, VpnCertificate.device_id, ids))
                                .order_by(VpnCertificate.id)):
        certs.setdefault(cert.device_id, []).append(cert)
    now = utcnow()
    removed: list[str] = []
    out: dict[int, list[str] | None] = {}
    for device, reason in cuts:
        if device.id in out:
            continue
        peer, mine = peers.get(device.id), certs.get(device.id, [])
        targets: list = ([peer] if peer is not None and peer.state != "removed" else []) + [
            c for c in mine if c.state in ("active", "cut")]
        if not targets:
            out[device.id] = None
            continue
        changed = False
        for item in targets:
            kind = "wireguard" if isinstance(item, WireGuardPeer) else _cert_kind(item)
            if item.state == "active":
                item.state, item.cut_at, item.cut_by, item.reason = "cut", now, by, reason[:255]
                _event(session, device, kind, "cut", reason, requested_by or by, getattr(item, "address_v4", None))
                changed = True
            elif item.state == "cut" and by == "manual" and item.cut_by != "manual":
                item.cut_by, item.reason = "manual", reason[:255]
            if isinstance(item, WireGuardPeer):
                item.updated_at = now
        if changed:
            log.warning("VPN access of device %s cut (%s): %s", device.udid, by, reason)
            if peer is not None and peer.state == "cut":
                removed.append(peer.public_key)
        ikev2 = next((c for c in reversed(mine) if c.provider_key is None), None)
        out[device.id] = ((["wireguard"] if peer is not None and peer.state != "removed" else [])
                          + (["ikev2"] if ikev2 is not None and ikev2.state != "removed" else [])
                          + [c.provider_key for c in mine if c.provider_key is not None and c.state != "removed"])
    if removed:
        remove_after_commit(session, instance, removed)
        gateways.note(session, instance, remove=tuple(removed))
    if any(kinds is not None for kinds in out.values()):
        sync_after_commit(session, instance)
    return out


def restore_peer(session: Session, instance, device: Device, reason: str, *, by: str = "manual",
                 requested_by: str | None = None, report: bool = True) -> dict:
    """Put a cut device back on the gateway. A compliance restore leaves manual cuts alone.
    Returns peer_status(), or with report=False only which kinds of access the device has
    ({"kinds": [...]}, from the rows already read: no more queries)."""
    peer = _peer(session, device)
    certs = _live_certs(session, device)
    if (peer is None or peer.state == "removed") and not certs:
        raise NoPeer(f"device {device.udid} has no VPN access")
    now = utcnow()
    targets: list = ([peer] if peer is not None and peer.state != "removed" else []) + certs
    restored = False
    for item in targets:
        if item.state != "cut":
            continue
        if by == "compliance" and item.cut_by == "manual":
            log.info("device %s is compliant again but its VPN was cut manually; left cut", device.udid)
            continue
        kind = "wireguard" if isinstance(item, WireGuardPeer) else _cert_kind(item)
        item.state, item.restored_at, item.cut_by, item.reason = "active", now, None, reason[:255]
        _event(session, device, kind, "restored", reason, requested_by or by, getattr(item, "address_v4", None))
        log.info("VPN access of device %s restored (%s): %s", device.udid, by, reason)
        if isinstance(item, WireGuardPeer):
            item.updated_at = now
        restored = True
    if restored:  # nothing was cut: the server's config is already right
        sync_after_commit(session, instance)
        gateways.note(session, instance, upsert=(device.id,))
    if not report:
        return {"kinds": (["wireguard"] if targets and isinstance(targets[0], WireGuardPeer) else [])
                + sorted({_cert_kind(c) for c in certs if c.provider_key is None})
                + [c.provider_key for c in certs if c.provider_key is not None]}
    return peer_status(session, device)


def remove_peer(session: Session, instance, device: Device, reason: str, *, requested_by: str | None = None,
                kind: str | None = None) -> dict | None:
    """Remove the device's VPN access for good: release the address, drop the key material, revoke certificates.
    `kind`: only that provider's access ("wireguard", "ikev2" or a provider key), as a migration
    removes the VPN it moved the device off; None: all of it (the device left)."""
    peer = _peer(session, device) if kind in (None, "wireguard") else None
    now = utcnow()
    if peer is not None and peer.state != "removed":
        if peer.state == "active":
            remove_after_commit(session, instance, [peer.public_key])
        gateways.note(session, instance, remove=(peer.public_key,))
        address = peer.address_v4
        peer.state, peer.removed_at, peer.reason, peer.updated_at = "removed", now, reason[:255], now
        peer.address_v4 = peer.address_v6 = None  # back to the pool
        peer.private_key_enc = peer.preshared_key_enc = None
        _event(session, device, "wireguard", "removed", reason, requested_by, address)
        log.info("VPN peer of device %s removed (%s); address %s released", device.udid, reason, address)
    certs = (_live_certs(session, device) if kind is None else [] if kind == "wireguard"
             else _live_certs(session, device, None if kind == "ikev2" else kind))
    for cert in certs:
        cert.state, cert.removed_at, cert.reason = "removed", now, reason[:255]
        _event(session, device, _cert_kind(cert), "removed", reason, requested_by)
    sync_after_commit(session, instance)
    return peer_status(session, device)


# ------------------------------------------------------------------ reading

def peer_status(session: Session, device: Device) -> dict | None:
    """What the API and the device detail show. Never any key material but the public key."""
    peer = _peer(session, device)
    cert = session.scalar(select(VpnCertificate).where(VpnCertificate.device_id == device.id,
                                                       VpnCertificate.provider_key.is_(None))
                          .order_by(VpnCertificate.id.desc()).limit(1))
    provided = list(session.scalars(select(VpnCertificate).where(
        VpnCertificate.device_id == device.id, VpnCertificate.provider_key.is_not(None),
        VpnCertificate.state != "removed").order_by(VpnCertificate.id)))
    if peer is None and cert is None and not provided:
        return None
    out: dict = {}
    if provided:
        out["providers"] = [{"provider": c.provider_key, "state": c.state, "certificate_serial": c.serial,
                             "not_after": iso(c.not_after), "cut_by": c.cut_by, "reason": c.reason}
                            for c in provided]
    if peer is not None:
        out["wireguard"] = {
            "state": peer.state, "address": peer.address_v4, "address6": peer.address_v6,
            "public_key": peer.public_key, "cut_by": peer.cut_by, "reason": peer.reason,
            "created_at": iso(peer.created_at), "cut_at": iso(peer.cut_at),
            "restored_at": iso(peer.restored_at), "removed_at": iso(peer.removed_at),
            "profile_command_uuid": peer.profile_command_uuid,
        }
    if cert is not None:
        out["ikev2"] = {
            "state": cert.state, "certificate_serial": cert.serial, "sha256": cert.sha256_fingerprint,
            "local_identifier": cert.local_identifier, "not_after": iso(cert.not_after),
            "cut_by": cert.cut_by, "reason": cert.reason, "issued_at": iso(cert.issued_at),
            "cut_at": iso(cert.cut_at), "restored_at": iso(cert.restored_at),
            "profile_command_uuid": cert.profile_command_uuid,
        }
    # Top-level summary of the kind in use (WireGuard unless only IKEv2 or a provider exists / is live).
    primary = out.get("wireguard")
    if (primary is None or primary["state"] == "removed") and cert is None and provided:
        first = out["providers"][0]
        out.update(kind=first["provider"], state=first["state"], address=None, public_key=None,
                   cut_by=first["cut_by"], reason=first["reason"])
        return out
    if primary is None or (primary["state"] == "removed" and cert is not None and cert.state != "removed"):
        primary = {**out["ikev2"], "address": None, "public_key": None}
        out["kind"] = "ikev2"
    else:
        out["kind"] = "wireguard"
    for key in ("state", "address", "public_key", "cut_by", "reason"):
        out[key] = primary.get(key)
    return out


def device_events(session: Session, device: Device, limit: int = 100) -> list[dict]:
    rows = session.scalars(select(VpnEvent).where(VpnEvent.device_id == device.id).order_by(VpnEvent.id.desc()).limit(limit))
    return [{"kind": e.kind, "event": e.event, "reason": e.reason, "by": e.by, "address": e.address, "at": iso(e.at)}
            for e in rows]


def event_counts(session: Session, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Events in [start, end), e.g. {"cut": 3, "restored": 2, ...} for the monthly report."""
    rows = session.execute(select(VpnEvent.event, func.count(VpnEvent.id))
                           .where(VpnEvent.at >= start, VpnEvent.at < end).group_by(VpnEvent.event))
    counts = {name: 0 for name in ("created", "rekeyed", "cut", "restored", "removed")}
    counts.update({name: n for name, n in rows})
    return counts


def list_peers(session: Session, *, state: str | None = None, unit_id: int | None = None, limit: int = 100,
               offset: int = 0) -> tuple[int, list[dict]]:
    stmt = select(WireGuardPeer, Device.udid, Device.serial_number).join(Device, Device.id == WireGuardPeer.device_id)
    count = select(func.count(WireGuardPeer.id)).join(Device, Device.id == WireGuardPeer.device_id)
    if state:
        stmt, count = stmt.where(WireGuardPeer.state == state), count.where(WireGuardPeer.state == state)
    if unit_id is not None:
        stmt, count = stmt.where(Device.unit_id == unit_id), count.where(Device.unit_id == unit_id)
    total = session.scalar(count)
    rows = session.execute(stmt.order_by(WireGuardPeer.id).limit(limit).offset(offset))
    return total, [
        {"udid": udid, "serial_number": serial, "state": p.state, "address": p.address_v4, "address6": p.address_v6,
         "public_key": p.public_key, "cut_by": p.cut_by, "reason": p.reason, "created_at": iso(p.created_at),
         "cut_at": iso(p.cut_at), "restored_at": iso(p.restored_at)}
        for p, udid, serial in rows
    ]
