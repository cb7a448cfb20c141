"""Monthly figures, computed from the loaders' DataFrames for one explicit month.

Definitions (they are repeated in the report's "Phương pháp / Method" section):

* Period and days: local calendar month and local days (Asia/Ho_Chi_Minh), see periods.py.
* Fleet (as of the end of the month): a device counts as *enrolled* if it started enrolling
  before the end, completed enrollment (state enrolled / checked_out / retired) and had not
  checked out before the end; retired devices are excluded (retirement carries no
  timestamp in the inventory). *Pending* = enrollment tokens issued before the end, neither
  revoked, expired nor used by then. *Handed over* = devices with an open handover to a
  leader (DeviceAssignment) at the end.
* Compliance intervals: a device's verdict state holds from one transition to the next;
  the state at the start of the month is the last transition before it. A transition caused
  by check-out or retirement takes the device out of scope (it is no longer managed), and
  a device is in scope only from its first verdict. Every interval is split at local
  midnights; a device-day contributes the *fraction* of that day spent in each state.
  Compliance rate = compliant device-days / device-days in scope ("grace" and "unknown"
  are not compliant: there is no evidence the device met every rule).
* Non-compliance by rule: device-days spent in grace / non_compliant / blocked, attributed
  to every rule the transition lists as failing.
* Time to remediate: an episode starts when a device leaves compliant (or, for a device
  that never was compliant, at its first failing state) and ends at its next compliant
  verdict; only episodes that reach a failing state count, and only those ending in the
  month are measured. Mean and p90 (nearest-rank: the smallest value ≥ 90 % of episodes).
  History is read back `lookback_days`; an older episode start is taken as that horizon.
* Patch latency: for an OS version V, first_seen(V) is the first time any device reported
  it; for every device that had reported an older version by then, latency = the first time
  the device reports ≥ V minus first_seen(V), in days. "Still behind" counts fleet devices
  whose last report at month end is older than V.
* Certificates: per device the newest identity certificate not revoked at month end;
  "expiring within N days" = not_after in [end, end + N days). A renewal is a certificate
  issued in the month for a device that already had one; it is late when issued less than
  `late_renewal_days` before the previous certificate's expiry (or after it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import loaders
from .periods import Month

FAILING_STATES = ("grace", "non_compliant", "blocked")
STATES = ("compliant", "grace", "non_compliant", "blocked", "unknown")
LEAVE_TRIGGERS = ("checked_out", "retired")
NO_UNIT = -1
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class MetricOptions:
    lookback_days: int = 365  # how far back episode starts / OS history are read
    late_renewal_days: int = 7
    cert_windows: tuple[int, ...] = (30, 60)


def nearest_rank(values, q: float) -> float | None:
    """Nearest-rank percentile: an observed value, easy to check by hand."""
    arr = np.sort(np.asarray(list(values), dtype=float))
    if arr.size == 0:
        return None
    rank = int(np.ceil(q * arr.size))
    return float(arr[max(rank, 1) - 1])


def _mean(values) -> float | None:
    arr = np.asarray(list(values), dtype=float)
    return float(arr.mean()) if arr.size else None


def version_key(value) -> int | None:
    """'17.4.1' -> 17004001; '18' -> 18000000; unparseable -> None (ordering of versions)."""
    if not isinstance(value, str):
        return None
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", value)
    if not m:
        return None
    a, b, c = (int(p) if p else 0 for p in m.groups())
    return a * 1_000_000 + b * 1_000 + c


def rule_kinds(failing_rules) -> list[str]:
    """Rule kinds of a transition's failing_rules ([{"rule": kind, …}] or plain strings), unique, sorted."""
    kinds = set()
    for item in failing_rules or ():
        if isinstance(item, dict):
            kind = item.get("rule") or item.get("kind")
        else:
            kind = item
        if kind:
            kinds.add(str(kind))
    return sorted(kinds)


# ------------------------------------------------------------------ units
def _unit_frame(units: pd.DataFrame) -> pd.DataFrame:
    extra = pd.DataFrame([{"unit_id": NO_UNIT, "code": "-", "name_vi": "(chưa gán đơn vị)",
                           "name_en": "(no unit)", "stage": ""}])
    return pd.concat([units, extra], ignore_index=True)


def _with_units(df: pd.DataFrame, units: pd.DataFrame, col: str = "unit_id") -> pd.DataFrame:
    df = df.copy()
    df[col] = df[col].fillna(NO_UNIT).astype(int)
    out = df.merge(units[["unit_id", "code", "name_vi", "name_en"]].rename(columns={"unit_id": col}), on=col, how="left")
    return out.rename(columns={"code": "unit_code", "name_vi": "unit_name_vi", "name_en": "unit_name_en"})


# ------------------------------------------------------------------ fleet
def fleet_status(devices, tokens, assignments, checkins, units, month: Month) -> tuple[pd.DataFrame, pd.Series]:
    start, end = pd.Timestamp(month.start), pd.Timestamp(month.end)
    d = devices.copy()
    completed = d["enrollment_state"].isin(["enrolled", "checked_out", "retired"])
    still_in = d["checked_out_at"].isna() | (d["checked_out_at"] >= end)
    d["enrolled_end"] = completed & still_in & (d["enrollment_state"] != "retired") & (d["enrolled_at"] < end)
    d["new_in_month"] = d["enrolled_end"] & (d["enrolled_at"] >= start)
    t = tokens
    pending = t[(t["revoked_at"].isna() | (t["revoked_at"] >= end)) & (t["expires_at"] >= end)
                & (t["challenge_used_at"].isna() | (t["challenge_used_at"] >= end))]
    a = assignments
    open_a = a[a["returned_at"].isna() | (a["returned_at"] >= end)]
    handed = d[d["enrolled_end"] & d["device_id"].isin(open_a["device_id"])]
    checkouts = checkins[checkins["message_type"] == "CheckOut"].merge(d[["device_id", "unit_id"]], on="device_id", how="left")

    def per_unit(frame, name):
        frame = frame.assign(unit_id=frame["unit_id"].fillna(NO_UNIT).astype(int))
        return frame.groupby("unit_id").size().rename(name)

    table = pd.concat([per_unit(d[d["enrolled_end"]], "enrolled"), per_unit(d[d["new_in_month"]], "new_in_month"),
                       per_unit(pending, "pending"), per_unit(handed, "handed_over"),
                       per_unit(checkouts, "checked_out_in_month")], axis=1).fillna(0).astype(int)
    table = _with_units(table.reset_index(), units)
    table = table[table[["enrolled", "new_in_month", "pending", "handed_over", "checked_out_in_month"]].sum(axis=1) > 0]
    table = table.sort_values("unit_code", kind="mergesort").reset_index(drop=True)
    cols = ["unit_code", "unit_name_vi", "unit_name_en", "enrolled", "new_in_month", "pending", "handed_over",
            "checked_out_in_month"]
    return table[cols], d.loc[d["enrolled_end"], "device_id"]


# ------------------------------------------------------------------ compliance intervals
def state_intervals(transitions: pd.DataFrame, month: Month) -> pd.DataFrame:
    """One row per (device, interval) clipped to the month: device_id, udid, unit_id, state, rules, s, e."""
    start, end = pd.Timestamp(month.start), pd.Timestamp(month.end)
    tr = transitions.sort_values(["device_id", "at", "id"], kind="mergesort").reset_index(drop=True)
    if tr.empty:
        return pd.DataFrame(columns=["interval", "device_id", "udid", "unit_id", "state", "rules", "s", "e"])
    nxt = tr.groupby("device_id")["at"].shift(-1)
    out = pd.DataFrame({
        "device_id": tr["device_id"], "udid": tr["udid"], "unit_id": tr["unit_id"].fillna(NO_UNIT).astype(int),
        "state": np.where(tr["trigger"].isin(LEAVE_TRIGGERS), "left", tr["to_state"]),
        "rules": tr["failing_rules"].map(rule_kinds),
        "s": tr["at"].clip(lower=start), "e": nxt.fillna(end).clip(upper=end),
    })
    out = out[(out["e"] > out["s"]) & (out["state"] != "left")].reset_index(drop=True)
    out.insert(0, "interval", np.arange(len(out)))
    return out


def split_by_day(intervals: pd.DataFrame, month: Month) -> pd.DataFrame:
    """Explode intervals into (interval, day) pieces with the fraction of the local day covered
    (of 24 hours: Viet Nam has no DST, and the elapsed part of today counts as a part of a day)."""
    edges = np.array([pd.Timestamp(e).value for e in month.day_edges], dtype=np.int64)
    if intervals.empty:
        return pd.DataFrame(columns=["interval", "day", "frac"])
    s = intervals["s"].astype("datetime64[ns, UTC]").array.asi8
    e = intervals["e"].astype("datetime64[ns, UTC]").array.asi8
    first = np.searchsorted(edges, s, side="right") - 1
    last = np.searchsorted(edges, e, side="left") - 1
    n = last - first + 1
    idx = np.repeat(np.arange(len(intervals)), n)
    day = np.repeat(first, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    lo = np.maximum(s[idx], edges[day])
    hi = np.minimum(e[idx], edges[day + 1])
    frac = (hi - lo) / DAY.value
    return pd.DataFrame({"interval": intervals["interval"].to_numpy()[idx], "day": day, "frac": frac})


def compliance_figures(intervals, pieces, units, month: Month) -> dict[str, pd.DataFrame]:
    p = pieces.merge(intervals[["interval", "device_id", "unit_id", "state"]], on="interval")
    days = pd.DataFrame({"day": np.arange(len(month.days)), "date": [d.isoformat() for d in month.days]})
    wide = p.pivot_table(index="day", columns="state", values="frac", aggfunc="sum", fill_value=0.0)
    wide = wide.reindex(columns=list(STATES), fill_value=0.0).reindex(days["day"], fill_value=0.0)
    daily = days.set_index("day").join(wide).reset_index(drop=True)
    daily["device_days"] = daily[list(STATES)].sum(axis=1)
    daily["rate"] = np.where(daily["device_days"] > 0, daily["compliant"] / daily["device_days"].where(daily["device_days"] > 0, 1), np.nan)
    daily = daily[["date", "device_days", *STATES, "rate"]]

    per_dev = p.groupby(["device_id", "state"])["frac"].sum().unstack(fill_value=0.0).reindex(columns=list(STATES), fill_value=0.0)
    per_unit = p.groupby(["unit_id", "state"])["frac"].sum().unstack(fill_value=0.0).reindex(columns=list(STATES), fill_value=0.0)
    per_unit["device_days"] = per_unit.sum(axis=1)
    per_unit["devices"] = p.groupby("unit_id")["device_id"].nunique()
    per_unit["rate"] = per_unit["compliant"] / per_unit["device_days"]
    per_unit = _with_units(per_unit.reset_index(), units).sort_values("unit_code", kind="mergesort")
    per_unit = per_unit[["unit_code", "unit_name_vi", "unit_name_en", "devices", "device_days", "compliant", "rate"]]

    # Rules: device-days of each failing interval, credited to every rule it lists.
    iv_days = p.groupby("interval")["frac"].sum().rename("device_days")
    failing = intervals[intervals["state"].isin(FAILING_STATES)].join(iv_days, on="interval")
    ex = failing[["device_id", "rules", "device_days"]].explode("rules").dropna(subset=["rules"])
    total = float(daily["device_days"].sum())
    if ex.empty:
        rules = pd.DataFrame(columns=["rule", "device_days", "devices", "share"])
    else:
        rules = ex.groupby("rules").agg(device_days=("device_days", "sum"), devices=("device_id", "nunique")).reset_index()
        rules = rules.rename(columns={"rules": "rule"})
        rules["share"] = rules["device_days"] / total if total else np.nan
        rules = rules.sort_values(["device_days", "rule"], ascending=[False, True], kind="mergesort").reset_index(drop=True)

    # Devices in scope with no compliant time at all.
    never = per_dev[(per_dev.sum(axis=1) > 0) & (per_dev["compliant"] <= 0)]
    last = intervals.sort_values(["device_id", "s"], kind="mergesort").groupby("device_id").tail(1).set_index("device_id")
    never = pd.DataFrame({"device_id": never.index, "device_days": never.sum(axis=1).to_numpy()})
    never = never.join(last[["udid", "unit_id", "state", "rules"]], on="device_id")
    never = _with_units(never, units)
    never["failing_rules"] = never["rules"].map(lambda r: ", ".join(r))
    never = never.rename(columns={"state": "state_at_end"}).sort_values("udid", kind="mergesort").reset_index(drop=True)
    never = never[["udid", "unit_code", "unit_name_vi", "unit_name_en", "device_days", "state_at_end", "failing_rules"]]
    return {"compliance_daily": daily, "compliance_units": per_unit.reset_index(drop=True), "rules": rules,
            "never_compliant": never}


# ------------------------------------------------------------------ remediation
def remediation_episodes(history: pd.DataFrame, month: Month) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Episodes that ended in the month, and episodes still open at its end."""
    start, end = pd.Timestamp(month.start), pd.Timestamp(month.end)
    done, open_ = [], []
    h = history.sort_values(["device_id", "at", "id"], kind="mergesort")
    # One pass over plain lists: a per-device pandas groupby costs ~50x more at 10,000 devices.
    devs = h["device_id"].tolist()
    units_l = h["unit_id"].fillna(NO_UNIT).astype(int).tolist()
    states, triggers, ats = h["to_state"].tolist(), h["trigger"].tolist(), list(h["at"])
    current, prev_state, ep_start, failing, unit = None, None, None, False, NO_UNIT
    for i in range(len(devs) + 1):
        if i == len(devs) or devs[i] != current:
            if current is not None and ep_start is not None and failing:
                open_.append((current, unit, ep_start, end))
            if i == len(devs):
                break
            current, prev_state, ep_start, failing = devs[i], None, None, False
        unit, state, at = units_l[i], states[i], ats[i]
        if triggers[i] in LEAVE_TRIGGERS:
            prev_state, ep_start, failing = None, None, False
            continue
        if state == "compliant":
            if ep_start is not None and failing and start <= at < end:
                done.append((current, unit, ep_start, at))
            ep_start, failing = None, False
        else:
            if ep_start is None and (prev_state == "compliant" or state in FAILING_STATES):
                ep_start = at
            failing = failing or state in FAILING_STATES
        prev_state = state
    cols = ["device_id", "unit_id", "started_at", "ended_at"]
    done_df, open_df = pd.DataFrame(done, columns=cols), pd.DataFrame(open_, columns=cols)
    for df in (done_df, open_df):
        df["hours"] = ((df["ended_at"] - df["started_at"]) / pd.Timedelta(hours=1)).astype(float) if len(df) else pd.Series(dtype=float)
    return done_df, open_df


def remediation_tables(done, open_, udids, units) -> tuple[dict[str, pd.DataFrame], dict]:
    ep = _with_units(done.merge(udids, on="device_id", how="left"), units)
    ep = ep.sort_values(["ended_at", "udid"], kind="mergesort").reset_index(drop=True)
    episodes = ep[["udid", "unit_code", "unit_name_vi", "unit_name_en", "started_at", "ended_at", "hours"]]
    rows = []
    for unit_id, grp in ep.groupby("unit_id", sort=True):
        rows.append({"unit_id": unit_id, "episodes": len(grp), "mean_hours": _mean(grp["hours"]),
                     "p90_hours": nearest_rank(grp["hours"], 0.9)})
    per_unit = pd.DataFrame(rows, columns=["unit_id", "episodes", "mean_hours", "p90_hours"])
    per_unit = _with_units(per_unit, units).sort_values("unit_code", kind="mergesort").reset_index(drop=True)
    per_unit = per_unit[["unit_code", "unit_name_vi", "unit_name_en", "episodes", "mean_hours", "p90_hours"]]
    kpis = {"remediation_episodes": len(done), "remediation_mean_hours": _mean(done["hours"]),
            "remediation_p90_hours": nearest_rank(done["hours"], 0.9), "open_episodes": len(open_)}
    return {"remediation_episodes": episodes, "remediation_units": per_unit}, kpis


# ------------------------------------------------------------------ OS versions
def os_figures(reports: pd.DataFrame, devices: pd.DataFrame, fleet_ids: pd.Series, month: Month, udids, units):
    start, end = pd.Timestamp(month.start), pd.Timestamp(month.end)
    rep = reports.copy()
    keys = {v: version_key(v) for v in rep["os_version"].unique()}  # a handful of versions, many reports
    rep["key"] = rep["os_version"].map(keys)
    rep = rep.dropna(subset=["key"])
    rep["key"] = rep["key"].astype(np.int64)
    last = rep.sort_values(["device_id", "at"], kind="mergesort").groupby("device_id").tail(1).set_index("device_id")
    fleet = devices[devices["device_id"].isin(fleet_ids)].set_index("device_id")
    current = last["os_version"].reindex(fleet.index).fillna(fleet["os_version"])  # fallback: inventory
    spread = current.fillna("?").value_counts().rename_axis("os_version").reset_index(name="devices")
    spread["key"] = spread["os_version"].map(lambda v: version_key(v) or -1)
    spread["share"] = spread["devices"] / max(len(fleet), 1)
    spread = spread.sort_values(["key", "os_version"], ascending=[False, True], kind="mergesort")[["os_version", "devices", "share"]]

    cur_key = current.map(lambda v: version_key(v) if isinstance(v, str) else None)
    first_seen = rep.groupby("key")["at"].min().sort_index()
    rows, month_lat = [], []
    running_max = -1
    for key, seen in first_seen.sort_values(kind="mergesort").items():
        if key <= running_max:  # an older version reported late is not a release
            continue
        running_max = key
        before = rep[rep["at"] <= seen].sort_values(["device_id", "at"], kind="mergesort").groupby("device_id").tail(1)
        eligible = before.loc[before["key"] < key, "device_id"]
        upd = rep[(rep["key"] >= key) & rep["device_id"].isin(eligible)].groupby("device_id")["at"].min()
        lat = ((upd - seen) / DAY).astype(float)
        in_month = lat[(upd >= start) & (upd < end)]
        month_lat.extend(in_month.tolist())
        behind = int((cur_key.dropna() < key).sum())
        if seen < start and in_month.empty and behind == 0:
            continue  # an old release, fully rolled out before this month: nothing to report
        label = rep.loc[rep["key"] == key, "os_version"].sort_values().iloc[0]
        rows.append({"os_version": label, "first_seen": seen, "eligible": len(eligible), "updated": len(upd),
                     "updated_in_month": len(in_month), "mean_days": _mean(lat), "p90_days": nearest_rank(lat, 0.9),
                     "still_behind": behind})
    latency = pd.DataFrame(rows, columns=["os_version", "first_seen", "eligible", "updated", "updated_in_month",
                                          "mean_days", "p90_days", "still_behind"])
    latency = latency.iloc[::-1].reset_index(drop=True)  # newest first
    newest = latency.iloc[0] if len(latency) else None
    kpis = {"os_versions": len(spread), "patch_latency_mean_days": _mean(month_lat),
            "patch_latency_p90_days": nearest_rank(month_lat, 0.9),
            "devices_behind_newest_os": int(newest["still_behind"]) if newest is not None else 0}
    return {"os_spread": spread.reset_index(drop=True), "patch_latency": latency}, kpis


# ------------------------------------------------------------------ certificates
def certificate_figures(certs: pd.DataFrame, fleet_ids, month: Month, opts: MetricOptions, udids, devices, units):
    start, end = pd.Timestamp(month.start), pd.Timestamp(month.end)
    c = certs.sort_values(["device_id", "issued_at", "cert_id"], kind="mergesort").copy()
    valid = c[c["revoked_at"].isna() | (c["revoked_at"] >= end)]
    newest = valid[valid["device_id"].isin(fleet_ids)].groupby("device_id").tail(1).copy()
    newest["days_left"] = ((newest["not_after"] - end) / DAY).astype(float)
    horizon = max(opts.cert_windows)
    exp = newest[newest["days_left"] < horizon].merge(udids, on="device_id", how="left")
    exp = _with_units(exp.merge(devices[["device_id", "unit_id"]], on="device_id", how="left"), units)
    exp = exp.sort_values(["not_after", "udid"], kind="mergesort").reset_index(drop=True)
    expiring = exp[["udid", "unit_code", "unit_name_vi", "unit_name_en", "serial", "not_after", "days_left"]]
    kpis = {f"certs_expiring_{n}d": int(((newest["days_left"] >= 0) & (newest["days_left"] < n)).sum()) for n in opts.cert_windows}
    kpis["certs_expired"] = int((newest["days_left"] < 0).sum())

    c["prev_not_after"] = c.groupby("device_id")["not_after"].shift(1)
    ren = c[(c["issued_at"] >= start) & (c["issued_at"] < end) & c["prev_not_after"].notna()].copy()
    ren["days_before_expiry"] = ((ren["prev_not_after"] - ren["issued_at"]) / DAY).astype(float)
    ren["late"] = ren["days_before_expiry"] < opts.late_renewal_days
    ren = ren.merge(udids, on="device_id", how="left")
    ren = _with_units(ren.merge(devices[["device_id", "unit_id"]], on="device_id", how="left"), units)
    ren = ren.sort_values(["issued_at", "udid"], kind="mergesort").reset_index(drop=True)
    renewals = ren[["udid", "unit_code", "unit_name_vi", "unit_name_en", "issued_at", "prev_not_after", "days_before_expiry", "late"]]
    kpis["cert_renewals"] = len(ren)
    kpis["cert_late_renewals"] = int(ren["late"].sum())
    return {"certs_expiring": expiring, "cert_renewals": renewals}, kpis


# ------------------------------------------------------------------ gateway, actions, VPN
def gateway_figures(events: pd.DataFrame, month: Month, units):
    ev = events.copy()
    allow = int((ev["decision"] == "allow").sum())
    deny = int((ev["decision"] == "deny").sum())
    kpis = {"gateway_allowed": allow, "gateway_denied": deny, "gateway_deny_rate": deny / (allow + deny) if allow + deny else None}
    reasons = (ev.groupby(["decision", "reason_code"]).agg(count=("id", "size"), devices=("device_id", "nunique"))
               .reset_index())
    totals = reasons.groupby("decision")["count"].transform("sum")
    reasons["share"] = reasons["count"] / totals
    reasons = reasons.sort_values(["decision", "count", "reason_code"], ascending=[False, False, True], kind="mergesort")
    edges = np.array([pd.Timestamp(e).value for e in month.day_edges], dtype=np.int64)
    ev["day"] = np.searchsorted(edges, ev["at"].astype("datetime64[ns, UTC]").array.asi8, side="right") - 1 if len(ev) else []
    daily = pd.DataFrame({"date": [d.isoformat() for d in month.days]})
    for decision in ("allow", "deny"):
        counts = ev[ev["decision"] == decision].groupby("day").size()
        daily[decision] = counts.reindex(range(len(month.days)), fill_value=0).to_numpy()
    per_unit = ev.assign(unit_id=ev["leader_unit_id"]).pivot_table(index="unit_id", columns="decision", values="id",
                                                                   aggfunc="size", fill_value=0)
    per_unit = per_unit.reindex(columns=["allow", "deny"], fill_value=0).reset_index()
    per_unit = _with_units(per_unit, units).sort_values("unit_code", kind="mergesort").reset_index(drop=True)
    per_unit = per_unit[["unit_code", "unit_name_vi", "unit_name_en", "allow", "deny"]]
    return {"gateway_reasons": reasons.reset_index(drop=True), "gateway_daily": daily, "gateway_units": per_unit}, kpis


def action_figures(commands: pd.DataFrame, udids, devices, units):
    c = commands.merge(udids, on="device_id", how="left")
    c = _with_units(c.merge(devices[["device_id", "unit_id"]], on="device_id", how="left"), units)
    summary = (c.groupby("request_type").agg(total=("id", "size"), acknowledged=("status", lambda s: int((s == "acknowledged").sum())),
                                               devices=("device_id", "nunique")).reset_index())
    summary = summary.set_index("request_type").reindex(list(loaders.PROTECTIVE_COMMANDS), fill_value=0).reset_index()
    events = c.sort_values(["created_at", "id"], kind="mergesort")[["created_at", "udid", "unit_code", "unit_name_vi", "unit_name_en", "request_type", "status", "requested_by"]]
    count = lambda t: int((c["request_type"] == t).sum())
    kpis = {"device_locks": count("DeviceLock"), "lost_mode_enabled": count("EnableLostMode"), "erasures": count("EraseDevice")}
    return {"protective_actions": summary, "protective_events": events.reset_index(drop=True)}, kpis


def vpn_figures(events: pd.DataFrame, month: Month, udids):
    """events span a lookback so a restore in the month can be paired with an older cut."""
    start, end = pd.Timestamp(month.start), pd.Timestamp(month.end)
    ev = events.sort_values(["device_id", "at", "id"], kind="mergesort").copy()
    ev["prev_event"] = ev.groupby("device_id")["event"].shift(1)
    ev["prev_at"] = ev.groupby("device_id")["at"].shift(1)
    inm = ev[(ev["at"] >= start) & (ev["at"] < end)]
    cuts, restores = inm[inm["event"] == "cut"], inm[inm["event"] == "restored"]
    paired = restores[restores["prev_event"] == "cut"]
    dur = ((paired["at"] - paired["prev_at"]) / pd.Timedelta(hours=1)).astype(float)
    kpis = {"vpn_cuts": len(cuts), "vpn_restores": len(restores), "vpn_devices_cut": int(cuts["device_id"].nunique()),
            "vpn_mean_cut_hours": _mean(dur)}
    by_reason = (inm[inm["event"].isin(["cut", "restored"])].assign(reason=lambda f: f["reason"].fillna(""))
                 .groupby(["event", "reason"]).agg(count=("id", "size"), devices=("device_id", "nunique")).reset_index()
                 .sort_values(["event", "count", "reason"], ascending=[True, False, True], kind="mergesort"))
    return {"vpn_events": by_reason.reset_index(drop=True)}, kpis


def incident_figures(events: pd.DataFrame, checkpoint: pd.DataFrame):
    """Security events of the month (takeover attempts, tampering, …) and the audit chain's anchor."""
    by_kind = (events.groupby(["severity", "kind"]).agg(count=("id", "size"),
                                                        open=("acknowledged_at", lambda s: int(s.isna().sum())))
               .reset_index() if len(events) else pd.DataFrame(columns=["severity", "kind", "count", "open"]))
    order = {"critical": 0, "high": 1, "warning": 2, "info": 3}
    by_kind = by_kind.sort_values(["severity", "kind"], key=lambda c: c.map(order) if c.name == "severity" else c,
                                  kind="mergesort").reset_index(drop=True)
    listed = events[["at", "severity", "kind", "udid", "summary_vi", "summary_en", "acknowledged_at"]].reset_index(drop=True)
    kpis = {"security_events": len(events),
            "security_incidents": int((events["severity"].isin(["critical", "high"])).sum()) if len(events) else 0,
            "takeover_attempts": int((events["kind"] == "device_takeover_attempt").sum()) if len(events) else 0}
    return {"incidents": by_kind, "incident_events": listed, "audit_checkpoint": checkpoint.reset_index(drop=True)}, kpis
