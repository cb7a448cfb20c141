"""Data layer: one loader per source, each a SQLAlchemy select turned into a DataFrame.

Every loader takes an open Connection and explicit UTC instants (never "now"), selects
only the columns the report uses, orders deterministically, and returns time columns
as tz-aware UTC pandas timestamps. Rows are materialised through SQLAlchemy (not
pd.read_sql's driver path) so the UTCDateTime / JSON type processors run on every
backend: SQLite hands back naive strings otherwise.
"""
from __future__ import annotations

import datetime as dt
import io
import json

import pandas as pd
from sqlalchemy import String, and_, func, select, type_coerce
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
    StatusReportRecord,
)
from vpn import VpnEvent

# Commands the report counts as protective actions on a device.
PROTECTIVE_COMMANDS = ("DeviceLock", "EnableLostMode", "DisableLostMode", "EraseDevice")


def _is_key(column: str) -> bool:
    return column == "id" or column.endswith("_id")


def _copy_frame(conn: Connection, stmt, time_cols: tuple[str, ...], json_cols: tuple[str, ...]) -> pd.DataFrame:
    """PostgreSQL: the rows leave the server as CSV through COPY (in the connection's own
    transaction, so inside the report's snapshot) and pandas' C parser reads them — no Python
    object per value. NULL is written as \\N so that an empty string stays an empty string."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    columns = [c.key for c in stmt.selected_columns]
    raw = conn.connection.driver_connection
    buf = io.BytesIO()
    with raw.cursor() as cur, cur.copy(f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv, NULL '\\N')",
                                       compiled.params) as copy:
        for chunk in copy:
            buf.write(chunk)
    buf.seek(0)
    df = pd.read_csv(buf, names=columns, header=None, na_values=["\\N"], keep_default_na=False,
                     dtype={c: str for c in columns if c not in time_cols} | {c: "Int64" for c in columns if _is_key(c)})
    for col in columns:
        if col in time_cols:
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
        elif col in json_cols:
            df[col] = df[col].map(lambda v: json.loads(v) if isinstance(v, str) else None)
        elif _is_key(col):  # integer keys: int64 when complete, float64 with gaps (as the row path gives)
            df[col] = df[col].astype("int64") if not df[col].isna().any() else df[col].astype("float64")
        else:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


def _frame(conn: Connection, stmt, time_cols: tuple[str, ...] = (), json_cols: tuple[str, ...] = (),
           bulk: bool = False) -> pd.DataFrame:
    """Rows straight into columns. Time columns are selected without the per-row UTCDateTime
    processor (a Python call per value) and parsed by pandas in one vectorised pass instead:
    SQLite hands back ISO strings, PostgreSQL aware datetimes; both become UTC timestamps."""
    if time_cols:
        stmt = stmt.with_only_columns(*[type_coerce(c, String()).label(c.key) if c.key in time_cols else c
                                        for c in stmt.selected_columns], maintain_column_froms=True)
    if bulk and conn.dialect.name == "postgresql":
        return _copy_frame(conn, stmt, time_cols, json_cols)
    # Streamed in slices (a server-side cursor on PostgreSQL): only one slice of rows is ever held
    # as Python objects; each slice becomes columns at once.
    result = conn.execute(stmt, execution_options={"stream_results": True, "yield_per": 100_000})
    columns = list(result.keys())
    parts = []
    for rows in result.partitions():
        part = pd.DataFrame(dict(zip(columns, map(list, zip(*rows)))), columns=columns)
        for col in time_cols:
            part[col] = pd.to_datetime(part[col], utc=True, format="ISO8601")
        parts.append(part)
        del rows
    if not parts:
        df = pd.DataFrame([], columns=columns)
        for col in time_cols:
            df[col] = pd.Series([], dtype="datetime64[ns, UTC]")
        return df
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


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
    df = pd.concat([_frame(conn, carry, ("at",), ("failing_rules",), bulk=True),
                    _frame(conn, inside, ("at",), ("failing_rules",), bulk=True)], ignore_index=True)
    return df.sort_values(["device_id", "at", "id"], kind="mergesort").reset_index(drop=True)


def load_transition_history(conn: Connection, since: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Light history (no JSON columns) for episode starts that lie before the month."""
    t = VerdictTransition
    stmt = (select(t.id, t.device_id, t.unit_id, t.from_state, t.to_state, t.at, t.trigger)
            .where(t.at >= since, t.at < end).order_by(t.device_id, t.at, t.id))
    return _frame(conn, stmt, ("at",), bulk=True)


def load_os_reports(conn: Connection, since: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """OS versions the devices reported: acknowledged DeviceInformation answers
    (QueryResponses.OSVersion, extracted in SQL so the whole JSON is not shipped) and
    declarative status reports (device.operating-system.version).

    An iPad answers every day, so a year is hundreds of reports per device of the same one or two
    versions: the database groups them and each (device, version) arrives as its first and its last
    report — every figure of the OS section depends only on those (when a version was first seen,
    the version a device ran at a given time, the first report of a newer one), as long as a device
    does not go back to a version it had left."""
    c = Command
    version = c.result["QueryResponses"]["OSVersion"].as_string()
    answers = (select(c.device_id, c.completed_at.label("at"), version.label("os_version"))
               .where(c.request_type == "DeviceInformation", c.status == "acknowledged",
                      c.completed_at >= since, c.completed_at < end)).subquery()
    stmt = (select(answers.c.device_id, answers.c.os_version, func.min(answers.c.at).label("first_at"),
                   func.max(answers.c.at).label("last_at"))
            .where(answers.c.os_version.is_not(None), answers.c.os_version != "")
            .group_by(answers.c.device_id, answers.c.os_version))
    df = _frame(conn, stmt, ("first_at", "last_at"))
    # iPads on declarative management report a new version themselves (status item), at once.
    r = StatusReportRecord
    reported = r.items["device.operating-system.version"].as_string()
    status = (select(r.device_id, r.received_at.label("at"), reported.label("os_version"))
              .where(r.received_at >= since, r.received_at < end)).subquery()
    stmt = (select(status.c.device_id, status.c.os_version, func.min(status.c.at).label("first_at"),
                   func.max(status.c.at).label("last_at"))
            .where(status.c.os_version.is_not(None), status.c.os_version != "")
            .group_by(status.c.device_id, status.c.os_version))
    df = pd.concat([df, _frame(conn, stmt, ("first_at", "last_at"))], ignore_index=True)
    rows = pd.concat([df[["device_id", "first_at", "os_version"]].rename(columns={"first_at": "at"}),
                      df[["device_id", "last_at", "os_version"]].rename(columns={"last_at": "at"})], ignore_index=True)
    rows = rows.drop_duplicates()
    return rows.sort_values(["device_id", "at", "os_version"], kind="mergesort").reset_index(drop=True)


def load_certificates(conn: Connection, end: dt.datetime) -> pd.DataFrame:
    c = IdentityCertificate
    stmt = (select(c.id.label("cert_id"), c.device_id, c.serial, c.issued_at, c.not_before, c.not_after, c.revoked_at)
            .where(c.issued_at < end, c.device_id.is_not(None)).order_by(c.device_id, c.issued_at, c.id))
    return _frame(conn, stmt, ("issued_at", "not_before", "not_after", "revoked_at"))


def load_gateway_events(conn: Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    g = GatewayAuditEvent
    stmt = (select(g.id, g.at, g.action, g.decision, g.reason_code, g.device_id, g.leader_id, g.leader_unit_id)
            .where(g.at >= start, g.at < end).order_by(g.id))
    return _frame(conn, stmt, ("at",), bulk=True)


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
