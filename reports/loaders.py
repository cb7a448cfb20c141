"""Data layer: one loader per source, each a SQLAlchemy select turned into a DataFrame.

Every loader takes an open Connection and explicit UTC instants (never "now"), selects
only the columns the report uses, orders deterministically, and returns time columns
as tz-aware UTC pandas timestamps. Rows are materialised through SQLAlchemy (not
pd.read_sql's driver path) so the UTCDateTime / JSON type processors run on every
backend: SQLite hands back naive strings otherwise.
"""
from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from compliance import VerdictTransition
from document_gateway import AuditCheckpoint, DeviceAssignment, GatewayAuditEvent
from ipad_mdm.models import Unit
from ipad_mdm.security_events import SecurityEvent
from mdm import (
    CheckinEvent,
    Command,
    Device,
    EnrollmentToken,
    IdentityCertificate,
)
from vpn import VpnEvent

# Commands the report counts as protective actions on a device.
PROTECTIVE_COMMANDS = ("DeviceLock", "EnableLostMode", "DisableLostMode", "EraseDevice")


def _frame(conn: Connection, stmt, time_cols: tuple[str, ...] = ()) -> pd.DataFrame:
    result = conn.execute(stmt)
    columns = list(result.keys())
    df = pd.DataFrame(result.fetchall(), columns=columns)
    for col in time_cols:
        df[col] = pd.to_datetime(df[col], utc=True) if len(df) else pd.Series([], dtype="datetime64[ns, UTC]")
    return df


def load_units(conn: Connection) -> pd.DataFrame:
    stmt = select(Unit.id.label("unit_id"), Unit.code, Unit.name_vi, Unit.name_en, Unit.stage).order_by(Unit.code)
    return _frame(conn, stmt)


def load_devices(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    """Devices that had started enrolling before `end` (current inventory columns)."""
    d = Device
    stmt = (select(d.id.label("device_id"), d.udid, d.serial_number, d.unit_id, d.enrollment_state,
                   d.enrolled_at, d.token_updated_at, d.checked_out_at, d.os_version, d.lost_mode_enabled,
                   d.product_name, d.model_name)
            .where(d.enrolled_at < end).order_by(d.id))
    return _frame(conn, stmt, ("enrolled_at", "token_updated_at", "checked_out_at"))


def load_enrollment_tokens(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    t = EnrollmentToken
    stmt = (select(t.id.label("token_id"), t.unit_id, t.serial_number, t.created_at, t.expires_at,
                   t.profile_fetched_at, t.challenge_used_at, t.revoked_at)
            .where(t.created_at < end).order_by(t.id))
    return _frame(conn, stmt, ("created_at", "expires_at", "profile_fetched_at", "challenge_used_at", "revoked_at"))


def load_assignments(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    """Handovers (bàn giao) of iPads to leaders made before `end`."""
    a = DeviceAssignment
    stmt = (select(a.id.label("assignment_id"), a.device_id, a.leader_id, a.assigned_at, a.returned_at)
            .where(a.assigned_at < end).order_by(a.id))
    return _frame(conn, stmt, ("assigned_at", "returned_at"))


_TRANSITION_COLS = ("id", "device_id", "udid", "unit_id", "from_state", "to_state", "at", "trigger", "failing_rules")


def load_transitions(conn: Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Verdict transitions in [start, end) plus, per device, the last one before `start`
    (the state the device carried into the window)."""
    t = VerdictTransition
    cols = [getattr(t, c) for c in _TRANSITION_COLS]
    ranked = (select(t.id, func.row_number().over(partition_by=t.device_id, order_by=(t.at.desc(), t.id.desc())).label("rn"))
              .where(t.at < start).subquery())
    carry = select(*cols).join(ranked, and_(ranked.c.id == t.id, ranked.c.rn == 1))
    inside = select(*cols).where(t.at >= start, t.at < end)
    df = pd.concat([_frame(conn, carry, ("at",)), _frame(conn, inside, ("at",))], ignore_index=True)
    return df.sort_values(["device_id", "at", "id"], kind="mergesort").reset_index(drop=True)


def load_transition_history(conn: Connection, since: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Light history (no JSON columns) for episode starts that lie before the month."""
    t = VerdictTransition
    stmt = (select(t.id, t.device_id, t.unit_id, t.from_state, t.to_state, t.at, t.trigger)
            .where(t.at >= since, t.at < end).order_by(t.device_id, t.at, t.id))
    return _frame(conn, stmt, ("at",))


def load_os_reports(conn: Connection, since: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """OS versions the devices reported: acknowledged DeviceInformation answers
    (QueryResponses.OSVersion, extracted in SQL so the whole JSON is not shipped)."""
    c = Command
    version = c.result["QueryResponses"]["OSVersion"].as_string()
    stmt = (select(c.device_id, c.completed_at.label("at"), version.label("os_version"))
            .where(c.request_type == "DeviceInformation", c.status == "acknowledged",
                   c.completed_at >= since, c.completed_at < end)
            .order_by(c.device_id, c.completed_at, c.id))
    df = _frame(conn, stmt, ("at",))
    return df[df["os_version"].notna() & (df["os_version"] != "")].reset_index(drop=True)


def load_certificates(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    c = IdentityCertificate
    stmt = (select(c.id.label("cert_id"), c.device_id, c.serial, c.issued_at, c.not_before, c.not_after, c.revoked_at)
            .where(c.issued_at < end, c.device_id.is_not(None)).order_by(c.device_id, c.issued_at, c.id))
    return _frame(conn, stmt, ("issued_at", "not_before", "not_after", "revoked_at"))


def load_gateway_events(conn: Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    g = GatewayAuditEvent
    stmt = (select(g.id, g.at, g.action, g.decision, g.reason_code, g.device_id, g.leader_id, g.leader_unit_id)
            .where(g.at >= start, g.at < end).order_by(g.id))
    return _frame(conn, stmt, ("at",))


def load_protective_commands(conn: Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Lock / Lost Mode / erase commands created in [start, end)."""
    c = Command
    stmt = (select(c.id, c.device_id, c.request_type, c.status, c.requested_by, c.created_at, c.completed_at)
            .where(c.request_type.in_(PROTECTIVE_COMMANDS), c.created_at >= start, c.created_at < end)
            .order_by(c.id))
    return _frame(conn, stmt, ("created_at", "completed_at"))


def load_vpn_events(conn: Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    v = VpnEvent
    stmt = (select(v.id, v.device_id, v.kind, v.event, v.reason, v.by, v.at)
            .where(v.at >= start, v.at < end).order_by(v.id))
    return _frame(conn, stmt, ("at",))


def load_checkins(conn: Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    e = CheckinEvent
    stmt = (select(e.id, e.device_id, e.message_type, e.at)
            .where(e.at >= start, e.at < end).order_by(e.id))
    return _frame(conn, stmt, ("at",))


def load_security_events(conn: Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    e = SecurityEvent
    stmt = (select(e.id, e.at, e.severity, e.kind, e.udid, e.summary_vi, e.summary_en, e.acknowledged_at,
                   e.acknowledged_by)
            .where(e.at >= start, e.at < end).order_by(e.id))
    return _frame(conn, stmt, ("at", "acknowledged_at"))


def load_audit_checkpoint(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    """The newest signed checkpoint of the gateway audit chain before `end` (one row or none)."""
    c = AuditCheckpoint
    stmt = select(c.seq, c.head_hash, c.at).where(c.at < end).order_by(c.seq.desc()).limit(1)
    return _frame(conn, stmt, ("at",))


__all__ = [n for n in dir() if n.startswith("load_")] + ["PROTECTIVE_COMMANDS"]
