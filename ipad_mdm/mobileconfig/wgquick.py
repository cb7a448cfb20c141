"""WireGuard wg-quick text, as the official WireGuard Apple app parses it."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field


# --------------------------------------------------------------------------
# WireGuard wg-quick text, as the official WireGuard Apple app parses it
# (wireguard-apple, TunnelConfiguration+WgQuickConfig.swift and MOBILECONFIG.md)
# --------------------------------------------------------------------------

WIREGUARD_IOS_BUNDLE_ID = "com.wireguard.ios"
_WIREGUARD_BUNDLE_IDS = (WIREGUARD_IOS_BUNDLE_ID, "com.wireguard.macos")
_WG_INTERFACE_KEYS = {"privatekey", "listenport", "address", "dns", "mtu"}
_WG_PEER_KEYS = {"publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive"}
_WG_REPEATABLE = {"address", "allowedips", "dns"}
# Documented by the app as unsupported in mobileconfig; the app refuses them.
_WG_UNSUPPORTED = {"fwmark", "table", "preup", "postup", "predown", "postdown", "saveconfig"}


@dataclass
class _WgSection:
    kind: str  # "interface" or "peer"
    line: int
    attrs: dict[str, str] = field(default_factory=dict)


def _wg_sections(text: str) -> list[_WgSection]:
    """Split wg-quick text into sections; raise ValueError naming the line."""
    sections: list[_WgSection] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        lowered = line.lower()
        if lowered in ("[interface]", "[peer]"):
            sections.append(_WgSection(lowered[1:-1], number))
            continue
        if "=" not in line:
            raise ValueError(f"line {number}: expected 'Key = Value' or a section header")
        if not sections:
            raise ValueError(f"line {number}: key outside [Interface]/[Peer] section")
        name, value = (part.strip() for part in line.split("=", 1))
        key = name.lower()
        section = sections[-1]
        if key in _WG_UNSUPPORTED:
            raise ValueError(f"line {number}: {name} is not supported by the WireGuard app")
        allowed = _WG_INTERFACE_KEYS if section.kind == "interface" else _WG_PEER_KEYS
        if key not in allowed:
            raise ValueError(f"line {number}: unknown key {name!r} in [{section.kind.title()}]")
        if key in section.attrs:
            if key not in _WG_REPEATABLE:
                raise ValueError(f"line {number}: {name} given twice in one section")
            value = f"{section.attrs[key]},{value}"
        section.attrs[key] = value
    return sections


def _wg_key_ok(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _wg_u16(text: str) -> bool:
    return text.isdigit() and int(text) <= 65535


def _wg_endpoint(text: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%a-zA-Z]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text)
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    return (host, port) if port <= 65535 else None


def _wg_parse(text: str) -> list[_WgSection]:
    """Validate wg-quick text the way the WireGuard app would; never echo keys."""
    sections = _wg_sections(text)
    interfaces = [s for s in sections if s.kind == "interface"]
    peers = [s for s in sections if s.kind == "peer"]
    if len(interfaces) != 1:
        raise ValueError(f"needs exactly one [Interface] section (got {len(interfaces)})")
    iface = interfaces[0]
    if "privatekey" not in iface.attrs:
        raise ValueError(f"[Interface] at line {iface.line} has no PrivateKey")
    if not _wg_key_ok(iface.attrs["privatekey"]):
        raise ValueError(f"[Interface] at line {iface.line}: PrivateKey is not a base64 32-byte key")
    for name in ("listenport", "mtu"):
        if name in iface.attrs and not _wg_u16(iface.attrs[name]):
            raise ValueError(f"[Interface] at line {iface.line}: invalid {name} {iface.attrs[name]!r}")
    for address in _wg_list(iface.attrs.get("address", "")):
        try:
            ipaddress.ip_interface(address)
        except ValueError:
            raise ValueError(f"[Interface] at line {iface.line}: invalid Address {address!r}") from None
    if not peers:
        # Local rule: the app accepts it, but a tunnel without peers is useless.
        raise ValueError("needs at least one [Peer] section")
    seen_keys: set[str] = set()
    for peer in peers:
        where = f"[Peer] at line {peer.line}"
        public = peer.attrs.get("publickey")
        if public is None:
            raise ValueError(f"{where} has no PublicKey")
        if not _wg_key_ok(public):
            raise ValueError(f"{where}: PublicKey is not a base64 32-byte key")
        if public in seen_keys:
            raise ValueError(f"{where}: PublicKey repeats an earlier peer")
        seen_keys.add(public)
        if "presharedkey" in peer.attrs and not _wg_key_ok(peer.attrs["presharedkey"]):
            raise ValueError(f"{where}: PresharedKey is not a base64 32-byte key")
        for network in _wg_list(peer.attrs.get("allowedips", "")):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{where}: invalid AllowedIPs entry {network!r}") from None
        if "endpoint" in peer.attrs and _wg_endpoint(peer.attrs["endpoint"]) is None:
            raise ValueError(f"{where}: invalid Endpoint {peer.attrs['endpoint']!r}")
        keepalive = peer.attrs.get("persistentkeepalive")
        if keepalive is not None and not _wg_u16(keepalive):
            raise ValueError(f"{where}: invalid PersistentKeepalive {keepalive!r}")
    return sections


def _wg_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _check_wg_quick(text: str) -> str | None:
    try:
        _wg_parse(text)
    except ValueError as exc:
        return f"is not a valid wg-quick configuration: {exc}"
    return None


