"""VPN gateways on their own hosts (issue #19): the server's side of `ipad-mdm vpn agent`.

Each gateway has a Celery queue of its own (`vpn-gw.<name>`) that only its agent consumes. After a
transaction that changed peers commits, every gateway gets one numbered message with the desired
state of the peers that changed, read from the database at send time (so a rolled-back savepoint or
a later change can never be undone by an old message); the agent applies message n only after n-1,
skips what it has already applied, and asks for a full resync on a gap or when it starts. Messages
carry preshared keys: they are sealed with the gateway's own key (Fernet), which only the agent's
host holds besides the server. Reports come back sealed with the same key, so a forged report (for
example a fake handshake that would let a campaign remove the old VPN) is refused.

The agent needs no database access; the server records each gateway's last applied state.
"""
from __future__ import annotations

import json
import logging
import re

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ipad_mdm.db import gather_after_commit, utcnow
from ipad_mdm.jobs import background_task
from . import sightings
from .serverconf import active_peers
from .models import VpnGateway, WireGuardPeer

log = logging.getLogger(__name__)
APPLY_TASK = "vpn.gateway.apply"
CHANGES_TASK = "vpn.gateway.changes"
REPORT_TASK = "vpn.gateway.report"
_PENDING = "vpn.gateway.pending"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


class GatewayError(ValueError):
    pass


def queue_name(name: str) -> str:
    return f"vpn-gw.{name}"


def add(session: Session, instance, name: str, interface: str = "wg0") -> tuple[VpnGateway, bytes]:
    """Register a gateway; returns its row and the agent key (to be written to a 0600 file on its host)."""
    if not _NAME.match(name or ""):
        raise GatewayError("a gateway name is 1-40 characters a-z, 0-9 and '-', starting with a letter")
    if not re.match(r"^[A-Za-z0-9_.=+-]{1,15}$", interface or ""):
        raise GatewayError("interface must be a network interface name such as wg0")
    if session.scalar(select(VpnGateway.id).where(VpnGateway.name == name)) is not None:
        raise GatewayError(f"gateway {name} already exists")
    key = Fernet.generate_key()
    row = VpnGateway(name=name, interface=interface, key_enc=instance.fernet().encrypt(key).decode(),
                     created_at=utcnow())
    session.add(row)
    session.flush()
    return row, key


def describe(row: VpnGateway) -> dict:
    return {"name": row.name, "interface": row.interface, "queue": queue_name(row.name),
            "desired_seq": row.desired_seq, "applied_seq": row.applied_seq, "in_sync": row.applied_seq == row.desired_seq,
            "applied_peers": row.applied_peers, "applied_sha256": row.applied_sha256,
            "applied_at": row.applied_at.isoformat() if row.applied_at else None,
            "last_report_at": row.last_report_at.isoformat() if row.last_report_at else None,
            "last_error": row.last_error}


def _key(instance, row: VpnGateway) -> Fernet:
    return Fernet(instance.fernet().decrypt(row.key_enc.encode()))


# ------------------------------------------------------------------ changes out

def note(session: Session, instance, *, upsert: tuple[int, ...] = (), remove: tuple[str, ...] = ()) -> None:
    """Remember peers this transaction changed (device ids to upsert, public keys to remove); the
    gateways hear of them once it commits, off the request path: the dispatcher runs CHANGES_TASK
    (a script without one sends right after its commit).

    One message per transaction or SAVEPOINT: what a SAVEPOINT noted goes if it rolls back (a
    removal sent for a cut that was undone would take a live peer off), and what was noted after it
    still goes (the message is not the rolled-back SAVEPOINT's)."""
    dispatcher = session.info.get("dispatcher")

    def send(changes):
        upserts, removals = sorted(changes[0]), sorted(changes[1])
        if dispatcher is None:
            _send_logged(instance, upserts, removals)
        else:
            dispatcher.submit(CHANGES_TASK, upserts, removals)

    upserts, removals = gather_after_commit(session, _PENDING, lambda: (set(), set()), send)
    upserts.update(upsert)
    removals.update(remove)


@background_task(CHANGES_TASK)
def changes_task(rt, device_ids: list[int], removed_keys: list[str]) -> dict:
    return {"messages": _send_logged(rt.instance, device_ids, removed_keys)}


def _send_logged(instance, device_ids: list[int], removed_keys: list[str]) -> int:
    try:
        return send_changes(instance, device_ids, removed_keys)
    except Exception:  # the gateway converges at its next report (a gap or a hello asks for a resync)
        log.exception("VPN gateway change notice not sent; the next resync brings the gateways in line")
        return 0


def _peer_entries(session: Session, instance, **only) -> tuple[list[dict], set[str]]:
    """(active peers as the agent applies them, their public keys); `only` as serverconf.active_peers."""
    # `wg set … allowed-ips` takes the list without spaces (a config file line may have them).
    out = [{"public_key": p.public_key, "preshared_key": p.preshared_key, "allowed_ips": p.allowed_ips.replace(" ", "")}
           for p in active_peers(session, instance, **only)]
    return out, {p["public_key"] for p in out}


def _send(instance, session: Session, gateway: VpnGateway, message: dict) -> int:
    from ipad_mdm.celery_app import celery_app

    seq = session.execute(update(VpnGateway).where(VpnGateway.id == gateway.id)
                          .values(desired_seq=VpnGateway.desired_seq + 1).returning(VpnGateway.desired_seq)).scalar_one()
    token = _key(instance, gateway).encrypt(json.dumps({**message, "seq": seq, "gateway": gateway.name}).encode())
    celery_app().send_task(APPLY_TASK, args=[token.decode()], queue=queue_name(gateway.name))
    return seq


def send_changes(instance, device_ids: list[int], removed_keys: list[str]) -> int:
    """One message per gateway with the current state of these peers; returns the messages sent."""
    with instance.database.session() as s:
        gateways = list(s.scalars(select(VpnGateway).order_by(VpnGateway.id)))
        if not gateways:
            return 0
        active, active_keys = _peer_entries(s, instance, device_ids=device_ids, keys=removed_keys)
        gone = sorted(set(removed_keys) - active_keys)
        if device_ids:  # a device whose peer is not active: its current key leaves the gateway
            gone += [k for (k,) in s.execute(select(WireGuardPeer.public_key).where(
                WireGuardPeer.device_id.in_(device_ids), WireGuardPeer.state != "active")) if k not in gone]
        for gateway in gateways:
            _send(instance, s, gateway, {"full": False, "upsert": active, "remove": gone})
        return len(gateways)


def resync(instance, session: Session, gateway: VpnGateway) -> int:
    """The whole desired peer set, applied by the agent with `wg syncconf`."""
    peers, _ = _peer_entries(session, instance)
    return _send(instance, session, gateway, {"full": True, "peers": peers})


# ------------------------------------------------------------------ reports in

@background_task(REPORT_TASK)
def report_task(rt, gateway_name: str, token: str) -> dict:
    return receive_report(rt.instance, gateway_name, token)


def receive_report(instance, gateway_name: str, token: str) -> dict:
    """An agent's report: what it applied, its peers' handshakes; a gap or a start asks for a resync."""
    with instance.database.session() as s:
        row = s.scalar(select(VpnGateway).where(VpnGateway.name == str(gateway_name)[:40]))
        if row is None:
            log.warning("report from unknown VPN gateway %r refused", str(gateway_name)[:40])
            return {"refused": "unknown_gateway"}
        try:
            report = json.loads(_key(instance, row).decrypt(str(token).encode(), ttl=3600))
        except (InvalidToken, ValueError):
            log.warning("report of VPN gateway %s not sealed with its key (or older than an hour): refused", row.name)
            return {"refused": "bad_seal"}
        now = utcnow()
        row.last_report_at = now
        if report.get("ok") and isinstance(report.get("seq"), int) and report["seq"] >= row.applied_seq:
            row.applied_seq, row.applied_at, row.last_error = report["seq"], now, None
            row.applied_peers, row.applied_sha256 = report.get("peers"), str(report.get("sha256") or "")[:64] or None
        elif not report.get("ok"):
            row.last_error = str(report.get("detail") or "apply failed")[:500]
        recorded = 0
        handshakes = [sightings.Handshake(k, None, sightings._utc(int(t))) for k, t in report.get("handshakes") or []
                      if isinstance(k, str) and isinstance(t, int)]
        if handshakes:
            recorded = sightings.record_wireguard(s, handshakes)
        resent = 0
        if report.get("hello") or report.get("gap") or (report.get("ok") is False and report.get("resync")):
            resent = resync(instance, s, row)
        return {"applied_seq": row.applied_seq, "sightings": recorded, "resync_seq": resent}


def list_all(session: Session) -> list[dict]:
    return [describe(r) for r in session.scalars(select(VpnGateway).order_by(VpnGateway.name))]

