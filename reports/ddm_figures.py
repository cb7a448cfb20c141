"""Enforced iPadOS updates and declaration health, from what the iPads reported.

Sources: the softwareupdate.enforcement.specific declarations (the version current at the end of
the period, assigned as they are now: assignments keep no history), the iPads' status reports
(OS version, update failures, management.declarations) and the DeviceInformation answers.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import String, cast, or_, select
from sqlalchemy.engine import Connection

from declarative import Declaration, DeclarationAssignment, DeclarationVersion, reasons
from mdm import Device, StatusReportRecord

from .loaders import _frame
from .metrics import version_key

ENFORCEMENT = "com.apple.configuration.softwareupdate.enforcement.specific"
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
_WATCHED = ("device.operating-system.version", "softwareupdate.failure-reason", "management.declarations")


def load_enforcements(conn: Connection, end: dt.datetime) -> list[dict]:
    rows = conn.execute(select(Declaration.id, Declaration.identifier, DeclarationVersion.version,
                               DeclarationVersion.payload, DeclarationVersion.created_at)
                        .join(DeclarationVersion, DeclarationVersion.declaration_id == Declaration.id)
                        .where(Declaration.type == ENFORCEMENT, DeclarationVersion.created_at < end)
                        .order_by(Declaration.id, DeclarationVersion.version)).all()
    latest = {}
    for r in rows:
        latest[r.id] = r
    targets = conn.execute(select(DeclarationAssignment.declaration_id, DeclarationAssignment.target_type,
                                  DeclarationAssignment.device_id, DeclarationAssignment.unit_id)
                           .where(DeclarationAssignment.declaration_id.in_(list(latest) or [0]))).all()
    out = []
    for decl_id, r in latest.items():
        p = r.payload
        local = dt.datetime.strptime(p["TargetLocalDateTime"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=LOCAL)
        out.append({"identifier": r.identifier, "target": p["TargetOSVersion"], "deadline": local.astimezone(dt.timezone.utc),
                    "targets": [(t.target_type, t.device_id, t.unit_id) for t in targets if t.declaration_id == decl_id]})
    return out


def load_status_history(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    """Status reports up to `end` that changed one of the watched items (a full report repeating
    the same values changes nothing and is not read)."""
    changed = cast(StatusReportRecord.changed, String)
    stmt = (select(StatusReportRecord.device_id, StatusReportRecord.received_at.label("at"), StatusReportRecord.items)
            .where(StatusReportRecord.received_at < end, or_(*[changed.like(f'%"{n}"%') for n in _WATCHED]))
            .order_by(StatusReportRecord.device_id, StatusReportRecord.received_at, StatusReportRecord.id))
    return _frame(conn, stmt, ("at",))


def load_ddm_devices(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    stmt = (select(Device.id.label("device_id"), Device.udid, Device.unit_id, Device.ddm_enabled_at)
            .where(Device.ddm_enabled_at.is_not(None), Device.ddm_enabled_at < end).order_by(Device.id))
    return _frame(conn, stmt, ("ddm_enabled_at",))


def _reached(devices: pd.DataFrame, targets) -> pd.DataFrame:
    if any(t[0] == "all" for t in targets):
        return devices
    ids = {t[1] for t in targets if t[0] == "device"}
    units = {t[2] for t in targets if t[0] == "unit"}
    return devices[devices["device_id"].isin(ids) | devices["unit_id"].isin(units)]


def ddm_figures(conn: Connection, os_reports: pd.DataFrame, period, udids: pd.DataFrame) -> dict[str, pd.DataFrame]:
    until = period.until
    devices = load_ddm_devices(conn, period.end)
    history = load_status_history(conn, period.end)
    history = history[history["at"] <= pd.Timestamp(until)] if len(history) else history
    # os_reports holds both the DeviceInformation answers and the status reports' versions.
    timeline = os_reports[["device_id", "at", "os_version"]]
    timeline = timeline[timeline["at"] <= pd.Timestamp(until)]
    timeline = timeline.assign(key=timeline["os_version"].map(version_key)).sort_values(["device_id", "at"], kind="mergesort")

    failures = {}
    for row in history.itertuples():
        fr = row.items.get("softwareupdate.failure-reason")
        if isinstance(fr, dict):
            failures[row.device_id] = fr if fr.get("count") else None

    enf_rows, fail_rows = [], []
    for e in load_enforcements(conn, period.end):
        reached = _reached(devices, e["targets"])
        want = version_key(e["target"])
        tl = timeline[timeline["device_id"].isin(reached["device_id"])]
        by_deadline = set(tl[(tl["key"] >= want) & (tl["at"] <= pd.Timestamp(e["deadline"]))]["device_id"])
        latest = tl.groupby("device_id")["key"].last() if len(tl) else pd.Series(dtype="float64")
        now_ok = set(latest[latest >= want].index)
        due = e["deadline"] <= until
        overdue = [d for d in reached["device_id"] if d not in now_ok] if due else []
        failed = [d for d in reached["device_id"] if failures.get(d) and d not in now_ok]
        enf_rows.append({"declaration": e["identifier"], "target_version": e["target"], "deadline": e["deadline"],
                         "devices": len(reached), "at_target_by_deadline": len(by_deadline) if due else None,
                         "at_target": len(now_ok), "overdue": len(overdue), "update_failures": len(failed)})
        for d in failed:
            fr = failures[d]
            fail_rows.append({"device_id": d, "declaration": e["identifier"], "target_version": e["target"],
                              "failures": int(fr.get("count") or 0), "device_reason": str(fr.get("reason") or "")[:200]})
    fail_df = pd.DataFrame(fail_rows, columns=["device_id", "declaration", "target_version", "failures", "device_reason"])
    fail_df = fail_df.merge(udids, on="device_id", how="left")[["udid", "declaration", "target_version", "failures",
                                                                 "device_reason"]]

    # Declaration health: each iPad's last report of management.declarations in the period.
    last = {}
    for row in history.itertuples():
        md = row.items.get("management.declarations")
        if isinstance(md, dict):
            last[row.device_id] = md
    health: dict[str, dict] = {}
    for md in last.values():
        for key in ("activations", "configurations", "assets", "management"):
            for entry in md.get(key, []):
                if not isinstance(entry, dict) or str(entry.get("identifier", "")).startswith("vn.gov.ipadmdm."):
                    continue
                h = health.setdefault(str(entry.get("identifier"))[:64], {"valid": 0, "invalid": 0, "unknown": 0,
                                                                            "codes": {}})
                state = entry.get("valid") if entry.get("valid") in ("valid", "invalid") else "unknown"
                h[state] += 1
                for r in entry.get("reasons") or []:
                    if isinstance(r, dict) and state == "invalid":
                        h["codes"][r.get("code")] = h["codes"].get(r.get("code"), 0) + 1
    health_df = pd.DataFrame([{"declaration": k, "valid": v["valid"], "invalid": v["invalid"], "unknown": v["unknown"],
                               "ddm_reason": max(v["codes"], key=v["codes"].get) if v["codes"] else None}
                              for k, v in sorted(health.items())],
                             columns=["declaration", "valid", "invalid", "unknown", "ddm_reason"])
    enf_df = pd.DataFrame(enf_rows, columns=["declaration", "target_version", "deadline", "devices",
                                             "at_target_by_deadline", "at_target", "overdue", "update_failures"])
    if len(enf_df):
        enf_df["deadline"] = pd.to_datetime(enf_df["deadline"], utc=True)
    return {"os_enforcement": enf_df, "os_update_failures": fail_df, "declaration_health": health_df,
            "ddm_devices": pd.DataFrame({"devices": [len(devices)]})}


def reason_label(code, lang: str) -> str:
    return reasons.describe(code, lang) if code else ""
