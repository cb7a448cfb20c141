"""One month's figures: every loader and computation for a (possibly unfinished) month."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy.engine import Connection

from . import loaders
from .apps_figures import apps_figures
from .ddm_figures import ddm_figures
from .measures import measure_figures
from .metrics import (
    MetricOptions,
    _unit_frame,
    action_figures,
    certificate_figures,
    compliance_figures,
    fleet_status,
    gateway_figures,
    incident_figures,
    os_figures,
    remediation_episodes,
    remediation_tables,
    split_by_day,
    state_intervals,
    vpn_figures,
)
from .periods import Month, ReportPeriod, period_of
from .token_figures import token_figures
from .vpn_migration import vpn_migration_figures


@dataclass
class MonthFigures:
    month: ReportPeriod
    kpis: dict[str, float | int | None]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def compute_month(conn: Connection, month: Month, opts: MetricOptions | None = None,
                  as_of: dt.datetime | None = None) -> MonthFigures:
    """Figures for `month`, over the part that has happened by `as_of` (None: the month is over)."""
    opts = opts or MetricOptions()
    month = period_of(month, as_of) if isinstance(month, Month) else month
    start, end = month.start, month.end
    since = start - dt.timedelta(days=opts.lookback_days)
    units = _unit_frame(loaders.load_units(conn))
    devices = loaders.load_devices(conn, end)
    udids = devices[["device_id", "udid"]]
    checkins = loaders.load_checkins(conn, start, end)
    assignments = loaders.load_assignments(conn, end)
    fleet, fleet_ids = fleet_status(devices, loaders.load_enrollment_tokens(conn, end), assignments, checkins, units, month)
    kpis: dict = {"provisional": month.provisional, "until": month.until.isoformat(),
                  "fleet_enrolled": int(fleet["enrolled"].sum()), "fleet_new": int(fleet["new_in_month"].sum()),
                  "fleet_pending": int(fleet["pending"].sum()), "fleet_handed_over": int(fleet["handed_over"].sum()),
                  "fleet_checked_out": int(fleet["checked_out_in_month"].sum())}
    tables: dict[str, pd.DataFrame] = {"fleet": fleet}

    transitions = loaders.load_transitions(conn, start, end)
    intervals = state_intervals(transitions, month)
    pieces = split_by_day(intervals, month)
    comp = compliance_figures(intervals, pieces, units, month)
    tables.update(comp)
    daily = comp["compliance_daily"]
    dd = float(daily["device_days"].sum())
    kpis.update({"device_days": dd, "compliance_rate": float(daily["compliant"].sum()) / dd if dd else None,
                 "never_compliant": len(comp["never_compliant"])})

    done, open_ = remediation_episodes(loaders.load_transition_history(conn, since, end), month)
    t, k = remediation_tables(done, open_, udids, units)
    tables.update(t)
    kpis.update(k)

    os_reports = loaders.load_os_reports(conn, since, end)
    t, k = os_figures(os_reports, devices, fleet_ids, month, udids, units)
    tables.update(t)
    kpis.update(k)
    t, k = certificate_figures(loaders.load_certificates(conn, end), fleet_ids, month, opts, udids, devices, units)
    tables.update(t)
    kpis.update(k)
    gateway_events = loaders.load_gateway_events(conn, start, end)
    t, k = gateway_figures(gateway_events, month, units)
    tables.update(t)
    kpis.update(k)
    t, k = action_figures(loaders.load_protective_commands(conn, start, end), udids, devices, units)
    tables.update(t)
    kpis.update(k)
    vpn_events = loaders.load_vpn_events(conn, start - dt.timedelta(days=90), end)
    t, k = vpn_figures(vpn_events, month, udids)
    tables.update(t)
    kpis.update(k)
    security_events = loaders.load_security_events(conn, start, end)
    t, k = incident_figures(security_events, loaders.load_audit_checkpoint(conn, end))
    tables.update(t)
    kpis.update(k)
    tables.update(ddm_figures(conn, os_reports, month, udids))
    tables.update(apps_figures(conn, devices, units, month))
    t, k = token_figures(conn, month, assignments)
    tables.update(t)
    kpis.update(k)
    t, k = vpn_migration_figures(conn, month, devices, units)
    tables.update(t)
    kpis.update(k)
    t, k = measure_figures(intervals, pieces, transitions, vpn_events, gateway_events, security_events, month, units)
    tables.update(t)
    kpis.update(k)
    return MonthFigures(month=month, kpis=kpis, tables=tables)


# Headline indicators compared month over month, and how their change is expressed:
# "pp" = percentage points (rates), "abs" = plain difference.
KPI_ORDER = (
    ("fleet_enrolled", "abs"), ("fleet_new", "abs"), ("fleet_pending", "abs"), ("fleet_handed_over", "abs"),
    ("compliance_rate", "pp"), ("never_compliant", "abs"), ("remediation_episodes", "abs"),
    ("remediation_mean_hours", "abs"), ("remediation_p90_hours", "abs"), ("open_episodes", "abs"),
    ("devices_behind_newest_os", "abs"), ("patch_latency_mean_days", "abs"),
    ("certs_expiring_30d", "abs"), ("certs_expiring_60d", "abs"), ("certs_expired", "abs"),
    ("cert_renewals", "abs"), ("cert_late_renewals", "abs"),
    ("gateway_allowed", "abs"), ("gateway_denied", "abs"), ("gateway_deny_rate", "pp"),
    ("device_locks", "abs"), ("lost_mode_enabled", "abs"), ("erasures", "abs"),
    ("vpn_cuts", "abs"), ("vpn_restores", "abs"), ("vpn_devices_cut", "abs"),
    ("security_incidents", "abs"), ("takeover_attempts", "abs"),
)


def has_data(kpis: dict) -> bool:
    """False for a month before the first enrollment: nothing was measured, so nothing is 0."""
    return bool(kpis.get("device_days") or kpis.get("fleet_enrolled"))


def month_over_month(current: MonthFigures, previous: MonthFigures) -> pd.DataFrame:
    rows = []
    for key, how in KPI_ORDER:
        cur, prev = current.kpis.get(key), previous.kpis.get(key)
        change = None
        if cur is not None and prev is not None:
            change = (cur - prev) * (100.0 if how == "pp" else 1.0)
        rows.append({"indicator": key, "value": cur, "previous": prev, "change": change, "unit": how})
    return pd.DataFrame(rows)
