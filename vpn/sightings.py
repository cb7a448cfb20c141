"""Has the server side seen this iPad's tunnel? From the gateways' own words, not the device's.

WireGuard: `wg show <iface> dump` (one tab-separated line per peer, the latest handshake as a UNIX
time, 0 = never). OpenVPN: the server's status file (`status … ` with status-version 2 or 3: the
CLIENT_LIST and ROUTING_TABLE rows, columns named by their HEADER rows). Parsers are pure; `record`
stores the newest sighting per (device, provider).

The first line of a `wg show dump` is the interface's own private key: it is skipped unread and
never logged.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import VpnCertificate, VpnTunnelSighting, WireGuardPeer

log = logging.getLogger(__name__)


class DumpError(ValueError):
    """Text that is not what the gateway prints (nothing is recorded from it)."""


@dataclass(frozen=True)
class Handshake:
    public_key: str
    endpoint: str | None
    latest: dt.datetime | None  # None: never


def _utc(seconds: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc) if seconds > 0 else None


def parse_wg_dump(text: str) -> list[Handshake]:
    """Peers of `wg show <iface> dump` (or `wg show all dump`, whose lines start with the interface)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) in (4, 5):  # an interface line: private key, public key, port, fwmark
            continue
        if len(fields) == 8:  # wg(8): public key, preshared key, endpoint, allowed ips, latest handshake, rx, tx, keepalive
            fields = [""] + fields
        if len(fields) != 9:
            raise DumpError(f"line {n}: {len(fields)} fields; `wg show dump` peer lines have 8 (9 with 'all')")
        _iface, public, _psk, endpoint, _allowed, latest = fields[:6]
        if len(public) != 44 or not public.endswith("="):
            raise DumpError(f"line {n}: not a WireGuard public key")
        try:
            seconds = int(latest)
        except ValueError:
            raise DumpError(f"line {n}: latest handshake {latest[:20]!r} is not a number") from None
        out.append(Handshake(public, None if endpoint == "(none)" else endpoint, _utc(seconds)))
    return out


def parse_openvpn_status(text: str) -> dict[str, dt.datetime]:
    """Common name -> when the OpenVPN server last had it connected (status-version 2 or 3)."""
    headers: dict[str, list[str]] = {}
    seen: dict[str, dt.datetime] = {}
    for n, line in enumerate(text.splitlines(), 1):
        sep = "\t" if "\t" in line else ","
        fields = line.split(sep)
        if fields[0] == "HEADER" and len(fields) > 2:
            headers[fields[1]] = fields[2:]
            continue
        if fields[0] not in ("CLIENT_LIST", "ROUTING_TABLE"):
            continue
        cols = headers.get(fields[0])
        if cols is None:
            raise DumpError(f"line {n}: {fields[0]} before its HEADER row (use status-version 2 or 3)")
        row = dict(zip(cols, fields[1:]))
        when = row.get("Connected Since (time_t)") or row.get("Last Ref (time_t)")
        name = row.get("Common Name")
        if not name or not when:
            continue
        try:
            at = _utc(int(when))
        except ValueError:
            raise DumpError(f"line {n}: time {when[:20]!r} is not a number") from None
        if at is not None and (name not in seen or at > seen[name]):
            seen[name] = at
    return seen


def compile_log_pattern(pattern):
    """A verification hook the operator configures: a regular expression applied to each line of a log or
    accounting file the VPN server writes, naming the client's certificate common name (?P<cn>…) and when
    (?P<epoch>…) as a UNIX time or (?P<iso>…) as an ISO 8601 time. Returns the compiled pattern."""
    import re

    if not isinstance(pattern, str) or not 0 < len(pattern) <= 500:
        raise DumpError("the pattern must be a regular expression of at most 500 characters")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DumpError(f"not a regular expression ({exc})") from None
    groups = set(compiled.groupindex)
    if "cn" not in groups or not groups & {"epoch", "iso"}:
        raise DumpError("the pattern needs the groups (?P<cn>…) and (?P<epoch>…) or (?P<iso>…)")
    return compiled


def parse_log_pattern(text: str, pattern: str) -> dict[str, dt.datetime]:
    """Common name -> the latest time a matching line gives."""
    compiled = compile_log_pattern(pattern)
    seen: dict[str, dt.datetime] = {}
    for line in text.splitlines():
        m = compiled.search(line)
        if not m:
            continue
        try:
            if m.groupdict().get("epoch"):
                at = _utc(int(m.group("epoch")))
            else:
                at = dt.datetime.fromisoformat(m.group("iso").replace("Z", "+00:00"))
                at = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
        except (ValueError, OverflowError):
            continue  # a line the pattern half matched: not evidence of anything
        if at is not None and (m.group("cn") not in seen or at > seen[m.group("cn")]):
            seen[m.group("cn")] = at
    return seen


def _store(session: Session, device_id: int, provider_key: str, at: dt.datetime, source: str) -> bool:
    row = session.scalar(select(VpnTunnelSighting).where(
        VpnTunnelSighting.device_id == device_id, VpnTunnelSighting.provider_key == provider_key))
    if row is None:
        session.add(VpnTunnelSighting(device_id=device_id, provider_key=provider_key, seen_at=at, source=source))
        return True
    if row.seen_at is None or at > row.seen_at:
        row.seen_at, row.source = at, source
        return True
    return False


def record_wireguard(session: Session, handshakes: list[Handshake]) -> int:
    """Store the handshakes of peers we know; returns how many sightings moved forward."""
    latest = {h.public_key: h.latest for h in handshakes if h.latest is not None}
    if not latest:
        return 0
    peers = session.execute(select(WireGuardPeer.public_key, WireGuardPeer.device_id)
                            .where(WireGuardPeer.public_key.in_(list(latest))))
    return sum(_store(session, device_id, "wireguard", latest[key], "wg_dump") for key, device_id in peers)


def record_common_names(session: Session, provider_key: str, seen: dict[str, dt.datetime], source: str = "openvpn_status") -> int:
    """Store the VPN server's clients (by certificate common name) whose certificate we issued for this provider."""
    if not seen:
        return 0
    certs = session.execute(select(VpnCertificate.local_identifier, VpnCertificate.device_id).where(
        VpnCertificate.provider_key == provider_key, VpnCertificate.state == "active"))
    n = 0
    for local_id, device_id in certs:
        at = seen.get(local_id[:64])
        if at is not None:
            n += _store(session, device_id, provider_key, at, source)
    return n


def last_seen(session: Session, device_id: int, provider_key: str) -> dt.datetime | None:
    return session.scalar(select(VpnTunnelSighting.seen_at).where(
        VpnTunnelSighting.device_id == device_id, VpnTunnelSighting.provider_key == provider_key))


def wg_dump(vs) -> str:
    """`wg show <iface> dump` on this host (its first line, the private key, is dropped by the parser)."""
    import subprocess

    proc = subprocess.run([vs.wg_bin, "show", vs.interface, "dump"], capture_output=True, timeout=30)
    if proc.returncode != 0:  # stderr names the interface, never a key
        raise DumpError(f"wg show {vs.interface} dump failed: {proc.stderr.decode(errors='replace')[:200]}")
    return proc.stdout.decode()


def read_all(session: Session, instance) -> dict:
    """Sightings from every source this host can read; a source that fails is logged and skipped."""
    from .models import VpnProvider
    from .settings import vpn_settings

    out: dict = {}
    vs = vpn_settings(instance)
    if vs.apply_method == "syncconf":  # this host drives the WireGuard interface
        try:
            out["wireguard"] = record_wireguard(session, parse_wg_dump(wg_dump(vs)))
        except (DumpError, OSError) as exc:
            log.warning("WireGuard handshakes not read: %s", exc)
    for row in session.scalars(select(VpnProvider)):
        kind = (row.verification or {}).get("kind")
        if kind not in ("openvpn_status", "log_pattern"):
            continue
        try:
            with open(row.verification["path"], encoding="utf-8", errors="replace") as fh:
                text = fh.read(16 * 1024 * 1024)
            seen = (parse_openvpn_status(text) if kind == "openvpn_status"
                    else parse_log_pattern(text, row.verification["pattern"]))
            out[row.key] = record_common_names(session, row.key, seen, kind)
        except (DumpError, OSError) as exc:
            log.warning("tunnels of provider %s not read from its %s: %s", row.key, kind, exc)
    return out
