"""Service functions: leaders, device assignment, epochs, documents.

All run inside the caller's transaction (the caller commits). Anything that can change a
gateway decision bumps the device's epoch in the same transaction (see gate.py).
"""
from __future__ import annotations

import functools
import logging
import re
import secrets
import unicodedata
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ipad_mdm.db import among, utcnow
from ipad_mdm.models import Unit
from ipad_mdm.refusal import Refusal
from mdm import Device

from . import filetypes, signatures
from .models import CLASSIFICATIONS, LEADER_ROLES, DeviceAccess, DeviceAssignment, Document, DocumentUnit, Leader
from .storage import DocumentStore

log = logging.getLogger("document_gateway")


class GatewayError(Refusal):
    """Bad input to a service function; `status` is the HTTP status the API answers."""

    def __init__(self, message: str, status: int = 400, vi: str | None = None):
        super().__init__(message, vi)
        self.status = status


# ------------------------------------------------------------------ epochs
_PENDING = "document_gateway.access_changed"


def access_changed(session: Session, device_id: int | None) -> None:
    """The device's verdict, assignment or leader changed: its precomputed access state
    (models.DeviceAccess) is recomputed just before the caller's transaction commits — with
    everything that transaction changed, in one set-based pass for a bulk evaluation of thousands
    of devices — and if it cannot be written, the transaction does not commit (fail closed)."""
    if device_id is None:
        return
    session.info.setdefault(_PENDING, set()).add(device_id)


def _refresh_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    ids = session.info.pop(_PENDING, None)
    if ids:
        refresh_access(session, ids)


def _forget_pending(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


event.listen(Session, "before_commit", _refresh_pending)
event.listen(Session, "after_soft_rollback", _forget_pending)


def refresh_access(session: Session, device_ids) -> None:
    """Recompute DeviceAccess for these devices from their open assignment, leader and verdict."""
    from compliance import current_verdicts

    ids = sorted(set(device_ids))
    if not ids:
        return
    assignments = {a.device_id: a for a in session.scalars(select(DeviceAssignment).where(
        among(session, DeviceAssignment.device_id, ids), DeviceAssignment.returned_at.is_(None)))}
    leaders = {le.id: le for le in session.scalars(select(Leader).where(
        Leader.id.in_({a.leader_id for a in assignments.values()})))} if assignments else {}
    verdicts = current_verdicts(session, ids)
    now = utcnow()
    rows = []
    for device_id in ids:
        a = assignments.get(device_id)
        leader = leaders.get(a.leader_id) if a is not None else None
        v = verdicts.get(device_id)
        rows.append({
            "device_id": device_id, "updated_at": now,
            "leader_id": leader.id if leader else None, "leader_name": leader.full_name if leader else None,
            "leader_title": leader.title if leader else None, "leader_role": leader.role if leader else None,
            "leader_unit_id": leader.unit_id if leader else None, "leader_active": bool(leader and leader.active),
            "verdict_state": v.state if v else None,
            "grace_deadline": (v.grace_deadline or v.deadline) if v is not None and v.state == "grace" else None,
            "unassessed": bool(v and any(isinstance(r, dict) and r.get("rule") == "no_policy" for r in v.failing_rules)),
            "reasons_vi": list(v.reasons_vi) if v else [], "reasons_en": list(v.reasons_en) if v else [],
        })
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql" and len(rows) > 8:
        _upsert_arrays(session, rows)
        return
    session.connection().execute(_upsert_statement(dialect), rows)


@functools.lru_cache(maxsize=4)
def _upsert_statement(dialect: str):
    """An upsert in device order: no failure on a concurrent first insert (which would abort a
    PostgreSQL transaction), and two transactions lock the same devices in the same order.
    Executed once per row of one statement (the driver pipelines them), not as one statement with
    thousands of VALUES compiled and parsed anew every time. Built once: its SET clause over the
    EXCLUDED alias cost 0.2 ms of CPU, at every enrollment."""
    if dialect == "postgresql":
        insert = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:  # pragma: no cover - the project supports SQLite and PostgreSQL
        raise RuntimeError(f"unsupported database {dialect}")
    table = DeviceAccess.__table__
    stmt = insert(table)
    return stmt.on_conflict_do_update(index_elements=[table.c.device_id],
                                      set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != "device_id"})


# Column -> PostgreSQL array type of the set-based upsert (JSON travels as text, cast per row).
_ACCESS_ARRAYS = (("device_id", "int"), ("leader_id", "int"), ("leader_name", "text"), ("leader_title", "text"),
                  ("leader_role", "text"), ("leader_unit_id", "int"), ("leader_active", "bool"),
                  ("verdict_state", "text"), ("grace_deadline", "timestamptz"), ("unassessed", "bool"),
                  ("reasons_vi", "text"), ("reasons_en", "text"), ("updated_at", "timestamptz"))


def _upsert_arrays(session: Session, rows: list[dict]) -> None:
    """PostgreSQL, many devices (a bulk evaluation's commit): one statement over column arrays
    (unnest), in device order, instead of one upsert per device. The arrays travel in binary (%(x)b):
    in text, every quote of the reasons' JSON is escaped by a regular expression in Python, and a
    first evaluation of 10,000 devices spent 0.5 s there."""
    from ipad_mdm.db import json_dumps

    names = [c for c, _ in _ACCESS_ARRAYS]
    params = {c: [json_dumps(r[c]) if c.startswith("reasons_") else r[c] for r in rows] for c in names}
    select_list = ", ".join(f"u.{c}::json" if c.startswith("reasons_") else f"u.{c}" for c in names)
    arrays = ", ".join(f"%({c})b::{t}[]" for c, t in _ACCESS_ARRAYS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c != "device_id")
    session.connection().exec_driver_sql(
        f"INSERT INTO gateway_device_access ({', '.join(names)}) "
        f"SELECT {select_list} FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(names)}, ord) ORDER BY u.ord "
        f"ON CONFLICT (device_id) DO UPDATE SET {updates}", params)


# ------------------------------------------------------------------ leaders
def _unit(session: Session, unit) -> Unit:
    if isinstance(unit, Unit):
        return unit
    row = None
    if isinstance(unit, int) and not isinstance(unit, bool):
        row = session.get(Unit, unit)
    elif isinstance(unit, str) and unit:
        row = session.scalar(select(Unit).where(Unit.code == unit))
    if row is None:
        raise GatewayError(f"unknown unit {unit!r}", vi=f"Không có đơn vị “{unit}”.")
    return row


def create_leader(session: Session, full_name: str, unit, role: str, *, title: str = "", active: bool = True,
                  created_by: str = "") -> Leader:
    full_name = (full_name or "").strip()
    if not full_name or len(full_name) > 255:
        raise GatewayError("full_name is required (at most 255 characters)",
                           vi="Vui lòng nhập họ và tên (tối đa 255 ký tự).")
    if role not in LEADER_ROLES:
        raise GatewayError(f"role must be one of {', '.join(LEADER_ROLES)}", vi="Vui lòng chọn chức vụ trong danh sách.")
    if not isinstance(title, str) or len(title) > 255:
        raise GatewayError("title must be a string of at most 255 characters", vi="Chức danh dài tối đa 255 ký tự.")
    leader = Leader(full_name=full_name, title=title.strip(), unit_id=_unit(session, unit).id, role=role,
                    active=bool(active), created_by=created_by[:128])
    session.add(leader)
    session.flush()
    return leader


def _assigned_device_ids(session: Session, leader_id: int) -> list[int]:
    return list(session.scalars(select(DeviceAssignment.device_id).where(
        DeviceAssignment.leader_id == leader_id, DeviceAssignment.returned_at.is_(None))))


def update_leader(session: Session, leader: Leader, **changes) -> Leader:
    """Change active / role / unit_id / title / full_name; devices of the leader re-decide at once."""
    if "role" in changes and changes["role"] not in LEADER_ROLES:
        raise GatewayError(f"role must be one of {', '.join(LEADER_ROLES)}", vi="Vui lòng chọn chức vụ trong danh sách.")
    if "unit" in changes:
        changes["unit_id"] = _unit(session, changes.pop("unit")).id
    for key in ("full_name", "title", "role", "unit_id", "active"):
        if key in changes:
            setattr(leader, key, changes[key])
    leader.updated_at = utcnow()
    for device_id in _assigned_device_ids(session, leader.id):
        access_changed(session, device_id)
    return leader


def current_assignment(session: Session, device_id: int) -> DeviceAssignment | None:
    return session.scalar(select(DeviceAssignment).where(
        DeviceAssignment.device_id == device_id, DeviceAssignment.returned_at.is_(None)))


def _lock_device(session: Session, device: Device) -> None:
    # Two admins assigning the same iPad at once: serialise on the device row (PostgreSQL);
    # SQLite serialises writers anyway, and the partial unique index is the last guard.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Device.id).where(Device.id == device.id).with_for_update())


def assign_device(session: Session, device: Device, leader: Leader, *, by: str = "") -> DeviceAssignment:
    """Hand `device` to `leader`, closing any previous open assignment of the device."""
    if not leader.active:
        raise GatewayError("leader is not active", 409, vi="Lãnh đạo này đã ngừng sử dụng hệ thống.")
    if device.enrollment_state in ("retired", "checked_out"):
        raise GatewayError(f"device is {device.enrollment_state}", 409,
                           vi="Thiết bị đã bị loại bỏ hoặc đã gỡ quản lý: không gán cho lãnh đạo được.")
    _lock_device(session, device)
    now = utcnow()
    previous = current_assignment(session, device.id)
    if previous is not None:
        if previous.leader_id == leader.id:
            return previous
        previous.returned_at, previous.returned_by = now, by[:128]
        session.flush()  # the partial unique index allows one open row per device
    row = DeviceAssignment(device_id=device.id, leader_id=leader.id, assigned_at=now, assigned_by=by[:128])
    session.add(row)
    session.flush()
    access_changed(session, device.id)
    return row


def unassign_device(session: Session, device: Device, *, by: str = "") -> DeviceAssignment | None:
    """The device was returned (or lost): it reads nothing from its next request on."""
    _lock_device(session, device)
    row = current_assignment(session, device.id)
    if row is None:
        return None
    row.returned_at, row.returned_by = utcnow(), by[:128]
    session.flush()
    access_changed(session, device.id)
    return row


def leader_dict(leader: Leader, device_udids: list[str] | None = None) -> dict:
    return {
        "id": leader.id, "full_name": leader.full_name, "title": leader.title, "unit_id": leader.unit_id,
        "role": leader.role, "active": leader.active, "created_at": leader.created_at.isoformat(),
        **({"devices": device_udids} if device_udids is not None else {}),
    }


def assignment_dict(row: DeviceAssignment, udid: str) -> dict:
    return {
        "device": udid, "leader_id": row.leader_id, "assigned_at": row.assigned_at.isoformat(),
        "assigned_by": row.assigned_by,
        "returned_at": row.returned_at.isoformat() if row.returned_at else None,
    }


# ------------------------------------------------------------------ documents
def new_public_id() -> str:
    """128 random bits, URL-safe: neither guessable nor sequential."""
    return secrets.token_urlsafe(16)


PUBLIC_ID = re.compile(r"^[A-Za-z0-9_-]{16,43}$")


def safe_filename(name: str) -> str:
    """The name shown in Content-Disposition: basename only, no controls, no separators.
    It is display text; storage never uses it."""
    name = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in '"<>|:*?')
    name = name.strip(" .")[:200]
    return name or "document"


def store_document(session: Session, store: DocumentStore, instance_dir: Path, *, stream: BinaryIO,
                   filename: str, title: str, unit, classification: str, uploaded_by: str,
                   max_bytes: int, shared_units=(), all_units: bool = False, visible_roles=()) -> Document:
    """Check, store and register one upload. Raises GatewayError (400/413/415) naming the problem."""
    from .storage import TooLarge

    title = (title or "").strip()
    if not title or len(title) > 500:
        raise GatewayError("title is required (at most 500 characters)", vi="Vui lòng nhập tiêu đề (tối đa 500 ký tự).")
    if classification not in CLASSIFICATIONS:
        raise GatewayError(f"classification must be one of {', '.join(CLASSIFICATIONS)}",
                           vi="Vui lòng chọn mức độ mật trong danh sách.")
    roles = sorted(set(visible_roles or ()))
    bad = [r for r in roles if r not in LEADER_ROLES]
    if bad:
        raise GatewayError(f"unknown role(s) {', '.join(bad)}", vi="Có chức vụ không nằm trong danh sách.")
    owner = _unit(session, unit)
    shared = sorted({_unit(session, u).id for u in shared_units or ()} - {owner.id})
    filename = safe_filename(filename)
    try:
        tmp, digest, size = store.spool(stream, max_bytes)
    except TooLarge as exc:
        raise GatewayError(str(exc), 413) from None
    except OSError as exc:
        raise _storage_error(exc) from None
    try:
        if size == 0:
            raise GatewayError("empty file", vi="Tệp trống.")
        try:
            ftype = filetypes.check(tmp, size, filename)
        except filetypes.Rejected as exc:
            raise GatewayError(str(exc), 415) from None
        report = signatures.verify_pdf(tmp, instance_dir) if ftype is filetypes.PDF else signatures.SignatureReport()
        store.commit(tmp, digest)
    except OSError as exc:
        store.discard(tmp)
        raise _storage_error(exc) from None
    except BaseException:
        store.discard(tmp)
        raise
    doc = Document(
        public_id=new_public_id(), title=title, filename=filename, unit_id=owner.id, all_units=bool(all_units),
        visible_roles=roles, classification=classification, mime_type=ftype.mime, size=size, sha256=digest,
        uploaded_by=uploaded_by[:128], uploaded_at=utcnow(), signature_status=report.status,
        signature_signer=(report.signer or None) and report.signer[:1000], signature_signed_at=report.signed_at,
        signature_details=report.details, units=[DocumentUnit(unit_id=u) for u in shared],
    )
    session.add(doc)
    session.flush()
    log.info("document %s stored (%s, %d bytes, %s, signature %s) by %s", doc.public_id, ftype.key, size,
             classification, report.status, uploaded_by)
    return doc


def _storage_error(exc: OSError) -> GatewayError:
    """A full or read-only document store: nothing was stored (the temporary file is gone, no row)."""
    log.error("document store cannot be written: %s", exc)
    return GatewayError(f"the document store cannot be written ({exc.strerror or type(exc).__name__}): the disk is "
                        "full or read-only; nothing was stored", 507,
                        vi="Kho lưu trữ tài liệu đã đầy hoặc không ghi được; tài liệu chưa được lưu. "
                           "Vui lòng báo Trung tâm Tin học.")


def set_classification(session: Session, doc: Document, classification: str, *, by: str) -> Document:
    """Reclassify a document. Takes effect on the next request: the gate reads the
    classification from the database on every request (secret is never served)."""
    if classification not in CLASSIFICATIONS:
        raise GatewayError(f"classification must be one of {', '.join(CLASSIFICATIONS)}",
                           vi="Vui lòng chọn mức độ mật trong danh sách.")
    old = doc.classification
    if old != classification:
        doc.classification = classification
        session.flush()
        log.info("document %s reclassified %s -> %s by %s", doc.public_id, old, classification, by)
    return doc


def document_dict(doc: Document, *, admin: bool = False) -> dict:
    out = {
        "id": doc.public_id, "title": doc.title, "filename": doc.filename, "classification": doc.classification,
        "mime_type": doc.mime_type, "size": doc.size, "uploaded_at": doc.uploaded_at.isoformat(),
        "signature": {"status": doc.signature_status, "signer": doc.signature_signer,
                      "signed_at": doc.signature_signed_at.isoformat() if doc.signature_signed_at else None},
    }
    if admin:
        out.update(unit_id=doc.unit_id, shared_unit_ids=doc.visible_unit_ids, all_units=doc.all_units,
                   visible_roles=list(doc.visible_roles or ()), sha256=doc.sha256, uploaded_by=doc.uploaded_by,
                   withdrawn_at=doc.withdrawn_at.isoformat() if doc.withdrawn_at else None)
        out["signature"]["details"] = doc.signature_details
    return out
