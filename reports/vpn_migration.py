"""Moving off OpenVPN in the monthly report: which VPN the iPads have, who is still on OpenVPN, how
each migration campaign stands per unit, and how many iPads' tunnels a gateway saw in the period.

The installed VPNs and campaign steps are those on record when the report is made (the ProfileList
answers keep only the present); a tunnel counts as seen when its latest sighting falls in the period.
"""
from __future__ import annotations

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Connection

from vpn import VpnCampaign, VpnCampaignDevice, VpnInstallation, VpnProvider, VpnTunnelSighting

from .loaders import _frame
from .metrics import _with_units

BUILTIN_NAMES = {"wireguard": "WireGuard", "ikev2": "IKEv2", "unknown": "(không rõ / unknown)"}
IN_PROGRESS = ("installing", "verifying", "removing_source", "rolling_back")


def vpn_migration_figures(conn: Connection, period, devices: pd.DataFrame, units: pd.DataFrame
                          ) -> tuple[dict[str, pd.DataFrame], dict]:
    start, end = pd.Timestamp(period.start), pd.Timestamp(period.end)
    enrolled = devices[devices["enrollment_state"] == "enrolled"][["device_id", "serial_number", "unit_id"]]
    providers = {r.key: (r.name, r.kind) for r in conn.execute(select(VpnProvider.key, VpnProvider.name, VpnProvider.kind))}
    inst = _frame(conn, select(VpnInstallation.device_id, VpnInstallation.provider_key))
    inst = inst.merge(enrolled, on="device_id", how="inner")
    inst["provider"] = inst["provider_key"].map(lambda k: providers.get(k, (BUILTIN_NAMES.get(k, k), ""))[0])
    by_unit = (_with_units(inst, units).groupby(["unit_code", "unit_name_vi", "unit_name_en", "provider"], dropna=False)
               ["device_id"].nunique().reset_index(name="devices")) if len(inst) else pd.DataFrame(
        columns=["unit_code", "unit_name_vi", "unit_name_en", "provider", "devices"])
    openvpn_keys = {k for k, (_n, kind) in providers.items() if kind == "openvpn"}
    still = inst[inst["provider_key"].isin(openvpn_keys)].drop_duplicates("device_id")
    still = _with_units(still, units)[["serial_number", "unit_code", "unit_name_vi", "unit_name_en", "provider"]] \
        if len(still) else pd.DataFrame(columns=["serial_number", "unit_code", "unit_name_vi", "unit_name_en", "provider"])

    steps = _frame(conn, select(VpnCampaign.name.label("campaign"), VpnCampaignDevice.device_id, VpnCampaignDevice.step)
                   .join(VpnCampaign, VpnCampaign.id == VpnCampaignDevice.campaign_id)
                   .where(VpnCampaign.created_at < period.end))
    rows = []
    if len(steps):
        steps = _with_units(steps.merge(devices[["device_id", "unit_id"]], on="device_id", how="left"), units)
        for (campaign, code, name_vi, name_en), g in steps.groupby(["campaign", "unit_code", "unit_name_vi", "unit_name_en"],
                                                                   dropna=False):
            rows.append({"campaign": campaign, "unit_code": code, "unit_name_vi": name_vi, "unit_name_en": name_en,
                         "done": int((g["step"] == "done").sum()), "in_progress": int(g["step"].isin(IN_PROGRESS).sum()),
                         "pending": int((g["step"] == "pending").sum()), "failed": int((g["step"] == "failed").sum()),
                         "rolled_back": int((g["step"] == "rolled_back").sum())})
    progress = pd.DataFrame(rows, columns=["campaign", "unit_code", "unit_name_vi", "unit_name_en", "done", "in_progress",
                                           "pending", "failed", "rolled_back"])
    seen = _frame(conn, select(VpnTunnelSighting.device_id, VpnTunnelSighting.seen_at), ("seen_at",))
    with_vpn = set(inst["device_id"])
    seen_ids = set(seen[(seen["seen_at"] >= start) & (seen["seen_at"] < end)]["device_id"]) & with_vpn if len(seen) else set()
    kpis = {"vpn_devices_with_vpn": len(with_vpn), "vpn_devices_openvpn": int(len(still)),
            "vpn_tunnel_seen": len(seen_ids),
            "vpn_tunnel_seen_rate": (len(seen_ids) / len(with_vpn)) if with_vpn else None}  # 0..1
    return {"vpn_installed": by_unit, "vpn_still_openvpn": still, "vpn_campaign_progress": progress}, kpis
