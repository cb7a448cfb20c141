"""The VPN side of a simulated iPad, and the gateways' own words about it.

An iPad brings up the tunnel of each VPN profile it has installed: the WireGuard app with the
private key of its WgQuickConfig, OpenVPN Connect (or another VPN app) with the identity of the
profile's PKCS#12 payload. A test makes one fail (`state.vpn_broken`: a provider's
VPNSubType, or "*"), as a device whose app crashes or whose network blocks the port.

The gateway stand-ins print what the real servers print: `wg show <iface> dump` (tab-separated, the
interface's own line first, then one line per peer with the latest handshake as a UNIX time) and an
OpenVPN status file in status-version 2 (HEADER rows naming the columns of CLIENT_LIST and
ROUTING_TABLE). Both are fed to the server through the same parsers the gateway's output takes.
"""
from __future__ import annotations

import base64
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, pkcs12
from cryptography.x509.oid import NameOID

WIREGUARD = "com.wireguard.ios"


def _wg_public(private_b64: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


class VPNDevice:
    """Mixed into SimulatedIPad (which holds `state.installed_profiles`)."""

    def vpn_tunnels(self) -> list[dict]:
        """What this iPad brings up now: [{"subtype", "profile", "wg_public_key" | "common_name"}]."""
        broken = getattr(self.state, "vpn_broken", set())
        out = []
        for ident, profile in self.state.installed_profiles.items():
            payloads = profile.get("PayloadContent", [])
            by_uuid = {p["PayloadUUID"]: p for p in payloads}
            for p in payloads:
                if p.get("PayloadType") not in ("com.apple.vpn.managed", "com.apple.vpn.managed.applayer"):
                    continue
                subtype = p.get("VPNSubType", "")
                if subtype in broken or "*" in broken:
                    continue
                tunnel = {"subtype": subtype, "profile": ident}
                if p["PayloadType"].endswith(".applayer"):  # per-app: up only for the apps pointing at it
                    tunnel["apps"] = sorted(b for b, a in self.state.app_attributes.items()
                                            if a.get("VPNUUID") == p.get("VPNUUID"))
                vendor = p.get("VendorConfig", {})
                if subtype == WIREGUARD:
                    private = next(line.split("=", 1)[1].strip() for line in vendor["WgQuickConfig"].splitlines()
                                   if line.replace(" ", "").startswith("PrivateKey="))
                    tunnel["wg_public_key"] = _wg_public(private)
                else:
                    identity = by_uuid.get(p.get("VPN", {}).get("PayloadCertificateUUID"))
                    if identity is None:
                        continue  # no identity: the app cannot authenticate, no tunnel
                    _key, cert, _ = pkcs12.load_key_and_certificates(identity["PayloadContent"],
                                                                     identity["Password"].encode())
                    tunnel["common_name"] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
                out.append(tunnel)
        return out


def wg_show_dump(sims, *, interface_private: str = "", interface_public: str = "", port: int = 51820,
                 when: int | None = None) -> str:
    """`wg show wg0 dump` of a gateway these iPads connect to (peers that never connected: handshake 0)."""
    when = int(time.time()) if when is None else when
    lines = [f"{interface_private or 'aGlkZGVuLXByaXZhdGUta2V5LW5ldmVyLWxvZ2dlZC0xMjM='}\t"
             f"{interface_public or 'c2VydmVyLXB1YmxpYy1rZXktZm9yLWR1bXAtdGVzdHMtMTI='}\t{port}\toff"]
    for n, sim in enumerate(sims):
        for t in sim.vpn_tunnels():
            if "wg_public_key" in t:
                lines.append(f"{t['wg_public_key']}\t(hidden)\t203.0.113.{n % 250 + 1}:{40000 + n}\t"
                             f"10.77.0.{n % 250 + 2}/32\t{when}\t{1000 + n}\t{2000 + n}\t25")
    return "\n".join(lines) + "\n"


def openvpn_status(sims, *, when: int | None = None) -> str:
    """An OpenVPN server's status file (status-version 2) listing these iPads' connected tunnels."""
    when = int(time.time()) if when is None else when
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))
    lines = ["TITLE,OpenVPN 2.6.3 x86_64-pc-linux-gnu", f"TIME,{stamp},{when}",
             "HEADER,CLIENT_LIST,Common Name,Real Address,Virtual Address,Virtual IPv6 Address,Bytes Received,"
             "Bytes Sent,Connected Since,Connected Since (time_t),Username,Client ID,Peer ID,Data Channel Cipher"]
    routes = ["HEADER,ROUTING_TABLE,Virtual Address,Common Name,Real Address,Last Ref,Last Ref (time_t)"]
    for n, sim in enumerate(sims):
        for t in sim.vpn_tunnels():
            if "common_name" in t:
                lines.append(f"CLIENT_LIST,{t['common_name']},198.51.100.{n % 250 + 1}:{50000 + n},10.8.0.{n % 250 + 2},,"
                             f"{5000 + n},{6000 + n},{stamp},{when},UNDEF,{n},{n},AES-256-GCM")
                routes.append(f"ROUTING_TABLE,10.8.0.{n % 250 + 2},{t['common_name']},198.51.100.{n % 250 + 1}:{50000 + n},"
                              f"{stamp},{when}")
    return "\n".join(lines + routes + ["GLOBAL_STATS,Max bcast/mcast queue length,0", "END"]) + "\n"
