"""The office's apps in the monthly report: coverage of the accepted release per app and per unit,
the time from the acceptance to 95 % of the iPads, iPads behind, provisioning-profile expiry.

Sources: the catalog and its releases (apps), where each iPad stands (apps_deployments: its last
status and when it changed; earlier states are not kept, so an iPad's install time is the last
change of its deployment).
"""
from __future__ import annotations

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Connection

from apps import App, AppDeployment, AppRelease

from .loaders import _frame
from .metrics import NO_UNIT, version_key

COVERAGE_TARGET = 0.95


def apps_figures(conn: Connection, devices: pd.DataFrame, units: pd.DataFrame, period) -> dict[str, pd.DataFrame]:
    until = pd.Timestamp(period.until)
    apps = _frame(conn, select(App.id.label("app_id"), App.bundle_id, App.name, App.kind).order_by(App.bundle_id))
    releases = _frame(conn, select(AppRelease.app_id, AppRelease.version, AppRelease.state, AppRelease.accepted_at,
                                   AppRelease.profile_expires_at, AppRelease.withdrawn_at)
                      .where(AppRelease.created_at < period.end), ("accepted_at", "profile_expires_at", "withdrawn_at"))
    deps = _frame(conn, select(AppDeployment.device_id, AppDeployment.app_id, AppDeployment.status,
                               AppDeployment.installed_version, AppDeployment.updated_at), ("updated_at",))
    live = devices[(devices["enrollment_state"] == "enrolled") & (devices["enrolled_at"] <= until)]
    fleet = len(live)
    rows, unit_rows = [], []
    for app in apps.itertuples():
        rel = releases[releases["app_id"] == app.app_id]
        accepted = rel[(rel["state"] == "accepted") & rel["accepted_at"].notna() & (rel["accepted_at"] <= until)]
        if accepted.empty:
            continue
        acc = accepted.loc[accepted["version"].map(version_key).idxmax()]
        want = version_key(acc["version"])
        d = deps[(deps["app_id"] == app.app_id) & deps["device_id"].isin(live["device_id"])]
        ok = d[d["installed_version"].map(lambda v: isinstance(v, str) and version_key(v) >= want)]
        ok = ok[ok["updated_at"] <= until]
        times = sorted(t for t in ok["updated_at"] if t >= acc["accepted_at"])
        already = len(ok) - len(times)
        needed = int(-(-COVERAGE_TARGET * fleet // 1)) if fleet else 0
        reach = None
        if fleet and already >= needed:
            reach = 0.0
        elif fleet and already + len(times) >= needed:
            reach = (times[needed - already - 1] - acc["accepted_at"]).total_seconds() / 86400
        expiring = rel[(rel["state"] != "withdrawn") & rel["profile_expires_at"].notna()]["profile_expires_at"]
        rows.append({"app": f"{app.name} ({app.bundle_id})", "accepted_version": acc["version"],
                     "accepted_at": acc["accepted_at"], "devices": fleet, "at_accepted": len(ok),
                     "coverage": len(ok) / fleet if fleet else None, "days_to_95": reach,
                     "behind": fleet - len(ok), "profile_expires_at": expiring.min() if len(expiring) else pd.NaT})
        merged = live[["device_id", "unit_id"]].assign(ok=live["device_id"].isin(ok["device_id"]),
                                                        unit_id=live["unit_id"].fillna(NO_UNIT))
        for unit_id, grp in merged.groupby("unit_id"):
            u = units[units["unit_id"] == unit_id]
            unit_rows.append({"app": app.bundle_id, "unit_code": u["code"].iloc[0] if len(u) else "",
                              "unit_name_vi": u["name_vi"].iloc[0] if len(u) else "",
                              "unit_name_en": u["name_en"].iloc[0] if len(u) else "",
                              "devices": len(grp), "at_accepted": int(grp["ok"].sum()),
                              "coverage": float(grp["ok"].mean()) if len(grp) else None})
    cols = ["app", "accepted_version", "accepted_at", "devices", "at_accepted", "coverage", "days_to_95", "behind",
            "profile_expires_at"]
    out = pd.DataFrame(rows, columns=cols)
    for c in ("accepted_at", "profile_expires_at"):
        out[c] = pd.to_datetime(out[c], utc=True)
    return {"app_coverage": out,
            "app_coverage_units": pd.DataFrame(unit_rows, columns=["app", "unit_code", "unit_name_vi", "unit_name_en",
                                                                   "devices", "at_accepted", "coverage"])}
