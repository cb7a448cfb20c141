"""VPN settings, read at call time from `settings.extra` first, then the environment.

Read at call time (not cached at import) so an operator can change
`settings.extra` on a running instance (tests do) and every worker sees the
same rules. Each value is validated here so a typo fails loudly with the name
of the setting instead of producing a broken WireGuard or IKEv2 profile.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

KINDS = ("wireguard", "ikev2")
APPLY_METHODS_BUILTIN = ("file", "syncconf")

# name in settings.extra -> (environment variable, default)
_SOURCES: dict[str, tuple[str, str]] = {
    "wg_network": ("IPAD_MDM_WG_NETWORK", "10.77.0.0/16"),
    "wg_network6": ("IPAD_MDM_WG_NETWORK6", ""),
    "wg_interface": ("IPAD_MDM_WG_INTERFACE", "wg0"),
    "wg_listen_port": ("IPAD_MDM_WG_LISTEN_PORT", "51820"),
    "wg_config": ("IPAD_MDM_WG_CONFIG", ""),
    "wg_apply": ("IPAD_MDM_WG_APPLY", "file"),
    "wg_endpoint": ("IPAD_MDM_WG_ENDPOINT", ""),
    "wg_allowed_ips": ("IPAD_MDM_WG_ALLOWED_IPS", ""),
    "wg_dns": ("IPAD_MDM_WG_DNS", ""),
    "wg_bin": ("IPAD_MDM_WG_BIN", "wg"),
    "wg_quick_bin": ("IPAD_MDM_WG_QUICK_BIN", "wg-quick"),
    "vpn_kind": ("IPAD_MDM_VPN_KIND", "wireguard"),
    "vpn_kind_overrides": ("IPAD_MDM_VPN_KIND_OVERRIDES", ""),
    "vpn_auto_provision": ("IPAD_MDM_VPN_AUTO_PROVISION", "true"),
    "vpn_display_name": ("IPAD_MDM_VPN_NAME", ""),
    "ikev2_remote_address": ("IPAD_MDM_IKEV2_REMOTE_ADDRESS", ""),
    "ikev2_remote_identifier": ("IPAD_MDM_IKEV2_REMOTE_IDENTIFIER", ""),
    "ikev2_server_ca_cn": ("IPAD_MDM_IKEV2_SERVER_CA_CN", ""),
    "ikev2_cert_days": ("IPAD_MDM_IKEV2_CERT_DAYS", "365"),
}


class VpnConfigError(ValueError):
    """A VPN setting is missing or malformed; the message names the setting."""


def _raw(extra: dict, name: str) -> str:
    env, default = _SOURCES[name]
    if name in extra and extra[name] not in (None, ""):
        value = extra[name]
    else:
        value = os.environ.get(env) or default
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    return str(value).strip()


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class VpnSettings:
    network: ipaddress.IPv4Network
    network6: ipaddress.IPv6Network | None
    interface: str
    listen_port: int
    config_path: Path
    apply_method: str
    endpoint: str
    allowed_ips: tuple[str, ...]
    dns: tuple[str, ...]
    wg_bin: str
    wg_quick_bin: str
    kind: str
    kind_overrides: dict[str, str]
    auto_provision: bool
    display_name: str
    ikev2_remote_address: str
    ikev2_remote_identifier: str
    ikev2_server_ca_cn: str
    ikev2_cert_days: int
    state_dir: Path

    @property
    def server_address(self) -> ipaddress.IPv4Address:
        # Convention of this project: the server is the first host (.1).
        return self.network.network_address + 1

    @property
    def server_address6(self) -> ipaddress.IPv6Address | None:
        return self.network6.network_address + 1 if self.network6 is not None else None

    @property
    def crl_path(self) -> Path:
        return self.state_dir / "ikev2-crl.pem"

    def kind_for(self, device) -> str:
        """Per-device override (UDID, serial number or unit id), else the global kind."""
        for key in (device.udid, device.serial_number, f"unit:{device.unit_id}" if device.unit_id else None):
            if key and key in self.kind_overrides:
                return self.kind_overrides[key]
        return self.kind


def _endpoint_default(base_url: str, port: int) -> str:
    host = urlsplit(base_url).hostname or "localhost"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def vpn_settings(instance) -> VpnSettings:
    s = instance.settings
    extra = s.extra or {}
    try:
        network = ipaddress.ip_network(_raw(extra, "wg_network"), strict=True)
    except ValueError as exc:
        raise VpnConfigError(f"IPAD_MDM_WG_NETWORK / wg_network is not a network: {exc}") from None
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > 30:
        raise VpnConfigError("IPAD_MDM_WG_NETWORK / wg_network must be an IPv4 network of /30 or larger")
    network6 = None
    if _raw(extra, "wg_network6"):
        try:
            network6 = ipaddress.ip_network(_raw(extra, "wg_network6"), strict=True)
        except ValueError as exc:
            raise VpnConfigError(f"IPAD_MDM_WG_NETWORK6 / wg_network6 is not a network: {exc}") from None
        if not isinstance(network6, ipaddress.IPv6Network) or network6.num_addresses < network.num_addresses:
            # IPv6 addresses mirror the IPv4 host index, so the v6 net must be at least as large.
            raise VpnConfigError("IPAD_MDM_WG_NETWORK6 / wg_network6 must be an IPv6 network at least as large as the IPv4 pool")
    interface = _raw(extra, "wg_interface")
    import re

    # wg-quick derives the interface name from the file name and allows only this.
    if not re.fullmatch(r"[a-zA-Z0-9_=+.-]{1,15}", interface):
        raise VpnConfigError("IPAD_MDM_WG_INTERFACE / wg_interface must be 1-15 characters of [a-zA-Z0-9_=+.-]")
    try:
        port = int(_raw(extra, "wg_listen_port"))
        cert_days = int(_raw(extra, "ikev2_cert_days"))
    except ValueError:
        raise VpnConfigError("IPAD_MDM_WG_LISTEN_PORT and IPAD_MDM_IKEV2_CERT_DAYS must be integers") from None
    if not 1 <= port <= 65535:
        raise VpnConfigError("IPAD_MDM_WG_LISTEN_PORT must be between 1 and 65535")
    state_dir = s.instance_dir / "vpn"
    config_raw = _raw(extra, "wg_config")
    config_path = Path(config_raw) if config_raw else state_dir / f"{interface}.conf"
    if config_path.name != f"{interface}.conf":
        raise VpnConfigError(f"IPAD_MDM_WG_CONFIG must be named {interface}.conf (wg-quick names the interface after the file)")
    allowed = _list(_raw(extra, "wg_allowed_ips")) or [str(network)] + ([str(network6)] if network6 else [])
    for item in allowed:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise VpnConfigError(f"IPAD_MDM_WG_ALLOWED_IPS entry {item!r} is not a network") from None
    dns = _list(_raw(extra, "wg_dns"))
    for item in dns:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise VpnConfigError(f"IPAD_MDM_WG_DNS entry {item!r} is not an IP address") from None
    kind = _raw(extra, "vpn_kind").lower()
    if kind not in KINDS:
        raise VpnConfigError(f"IPAD_MDM_VPN_KIND must be one of {', '.join(KINDS)} (got {kind!r})")
    overrides: dict[str, str] = {}
    for item in _list(_raw(extra, "vpn_kind_overrides")):
        key, _, value = item.partition("=")
        if value.strip().lower() not in KINDS:
            raise VpnConfigError(f"IPAD_MDM_VPN_KIND_OVERRIDES entry {item!r}: kind must be one of {', '.join(KINDS)}")
        overrides[key.strip()] = value.strip().lower()
    host = urlsplit(s.base_url).hostname or "localhost"
    remote = _raw(extra, "ikev2_remote_address") or host
    return VpnSettings(
        network=network,
        network6=network6,
        interface=interface,
        listen_port=port,
        config_path=config_path,
        apply_method=_raw(extra, "wg_apply").lower(),
        endpoint=_raw(extra, "wg_endpoint") or _endpoint_default(s.base_url, port),
        allowed_ips=tuple(allowed),
        dns=tuple(dns),
        wg_bin=_raw(extra, "wg_bin"),
        wg_quick_bin=_raw(extra, "wg_quick_bin"),
        kind=kind,
        kind_overrides=overrides,
        auto_provision=_raw(extra, "vpn_auto_provision").lower() in ("1", "true", "yes", "on"),
        display_name=_raw(extra, "vpn_display_name") or f"VPN {s.organization}",
        ikev2_remote_address=remote,
        ikev2_remote_identifier=_raw(extra, "ikev2_remote_identifier") or remote,
        ikev2_server_ca_cn=_raw(extra, "ikev2_server_ca_cn"),
        ikev2_cert_days=cert_days,
        state_dir=state_dir,
    )
