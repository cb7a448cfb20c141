"""Figures behind the measures the monthly report evaluates (đạt / chưa đạt)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import DAY, FAILING_STATES, LEAVE_TRIGGERS, _with_units

# The security measures the report evaluates, as groups of compliance rules: a device-day
# fails a measure when the device spent it in a failing state listing any rule of the group.
MEASURE_RULES = {
    "passcode": ("passcode_present", "passcode_compliant"),
    "encryption": ("hardware_encryption",),
    "os": ("min_os_version", "max_os_version"),
    "certificate": ("identity_certificate_valid",),
}
HARD_FAILING = ("non_compliant", "blocked")  # the states that must cut the VPN and close the gateway


def measure_figures(intervals, pieces, transitions, vpn_events, gateway_events, security_events, month, units):
    """Per-measure figures: failing device-days and devices per rule group (and per unit), the
    VPN cuts owed vs made, gateway allowances to a device in a hard-failing state, open incidents."""
    start, end = pd.Timestamp(month.start), pd.Timestamp(month.end)
    kpis: dict = {}
    iv_days = pieces.groupby("interval")["frac"].sum() if len(pieces) else pd.Series(dtype=float)
    failing = intervals[intervals["state"].isin(FAILING_STATES)].copy()
    failing["device_days"] = failing["interval"].map(iv_days).fillna(0.0) if len(failing) else []
    rows = []
    for key, rules in MEASURE_RULES.items():
        hit = failing[failing["rules"].map(lambda r, rs=rules: any(x in rs for x in r))] if len(failing) else failing
        kpis[f"{key}_fail_device_days"] = float(hit["device_days"].sum()) if len(hit) else 0.0
        kpis[f"{key}_fail_devices"] = int(hit["device_id"].nunique()) if len(hit) else 0
        for unit_id, grp in (hit.groupby("unit_id") if len(hit) else ()):
            rows.append({"measure": key, "unit_id": unit_id, "device_days": float(grp["device_days"].sum()),
                         "devices": int(grp["device_id"].nunique())})
    per_unit = pd.DataFrame(rows, columns=["measure", "unit_id", "device_days", "devices"])
    per_unit = _with_units(per_unit, units).sort_values(["measure", "device_days", "unit_code"],
                                                        ascending=[True, False, True], kind="mergesort")

    # VPN: every entry into a hard-failing state in the period owes a cut of that device's VPN.
    tr = transitions[(transitions["at"] >= start) & (transitions["at"] < end)
                     & transitions["to_state"].isin(HARD_FAILING) & ~transitions["trigger"].isin(LEAVE_TRIGGERS)
                     & ~transitions["from_state"].isin(HARD_FAILING)]
    owed = tr.groupby("device_id")["at"].min()
    cuts = vpn_events[(vpn_events["event"] == "cut") & (vpn_events["at"] >= start - DAY) & (vpn_events["at"] < end)]
    pairs = owed.rename("owed_at").reset_index().merge(cuts[["device_id", "at"]], on="device_id")
    done = pairs.loc[pairs["at"] >= pairs["owed_at"] - pd.Timedelta(minutes=5), "device_id"].nunique()
    kpis.update({"vpn_cuts_owed": int(len(owed)), "vpn_cuts_made": int(done)})

    # Gateway: an "allow" while the device's verdict was non_compliant or blocked is a leak.
    leaked = 0
    allowed = gateway_events[(gateway_events["decision"] == "allow") & gateway_events["device_id"].notna()]
    if len(allowed) and len(transitions):
        def keyed(frame):
            return frame.assign(device_id=frame["device_id"].astype(np.int64),
                                at=frame["at"].astype("datetime64[ns, UTC]")).sort_values("at", kind="mergesort")

        left = keyed(allowed[["at", "device_id"]])
        right = keyed(transitions[["at", "device_id", "to_state", "trigger"]])
        state = pd.merge_asof(left, right, on="at", by="device_id", direction="backward")
        leaked = int((state["to_state"].isin(HARD_FAILING) & ~state["trigger"].isin(LEAVE_TRIGGERS)).sum())
    kpis["gateway_allowed_while_failing"] = leaked
    kpis["gateway_secret_refused"] = int((gateway_events["reason_code"] == "classification_secret").sum())

    ev = security_events
    serious = ev[ev["severity"].isin(["critical", "high"])] if len(ev) else ev
    kpis["incidents_open"] = int((serious["acknowledged_at"].isna() | (serious["acknowledged_at"] >= end)).sum()) if len(serious) else 0
    return {"measure_units": per_unit.reset_index(drop=True)}, kpis
