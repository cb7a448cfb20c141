"""The gateway's append-only, hash-chained decision log.

Every row stores row_hash = sha256(prev_hash + canonical_json(row without the two hashes)).
Changing, deleting or re-ordering any row breaks the chain at that row: verify_chain finds it.

Appends are serialised by updating the single chain-head row *first*:
  * PostgreSQL: the UPDATE takes the head's row lock until commit; a concurrent appender
    waits, then (READ COMMITTED re-evaluates the UPDATE against the committed row) reads the
    new head, so two rows can never share a prev_hash.
  * SQLite: the UPDATE is the transaction's first statement and takes the database write lock
    (waiting up to busy_timeout), so the read-modify-write of the head is atomic as well.
The head's sequence number is the new row's primary key, so ids have no gaps and a deleted
row is detected even if an attacker recomputes every later hash without touching the head.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow

from .models import AuditHead, GatewayAuditEvent

log = logging.getLogger("document_gateway.audit")

GENESIS_HASH = "0" * 64
_HASHED = [c.name for c in GatewayAuditEvent.__table__.columns if c.name not in ("prev_hash", "row_hash")]
# String columns are truncated before hashing so the stored value is exactly what was hashed.
_LIMITS = {c.name: c.type.length for c in GatewayAuditEvent.__table__.columns
           if getattr(c.type, "length", None) and c.name not in ("prev_hash", "row_hash")}


def _canonical_value(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def canonical_json(fields: dict) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as is: the same bytes on every backend."""
    return json.dumps({k: _canonical_value(fields.get(k)) for k in _HASHED}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def row_hash(prev_hash: str, fields: dict) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode("utf-8")).hexdigest()


def _clean(fields: dict) -> dict:
    out = {}
    for k in _HASHED:
        v = fields.get(k)
        if isinstance(v, str) and k in _LIMITS:
            v = v[: _LIMITS[k]]
        out[k] = v
    return out


def _take_head(session: Session) -> tuple[int, str]:
    """Lock the chain head and reserve the next sequence number."""
    stmt = (update(AuditHead).where(AuditHead.id == 1).values(last_seq=AuditHead.last_seq + 1)
            .returning(AuditHead.last_seq, AuditHead.last_hash))
    for _ in range(3):
        row = session.execute(stmt).first()
        if row is not None:
            return int(row[0]), row[1]
        # The migration inserts the head; a schema made by create_all may lack it.
        try:
            with session.begin_nested():
                session.execute(insert(AuditHead).values(id=1, last_seq=0, last_hash=GENESIS_HASH))
        except IntegrityError:
            pass
    raise RuntimeError("gateway audit chain head row is missing and cannot be created")


def append(session: Session, **fields) -> GatewayAuditEvent:
    """Append one decision in the caller's transaction. Call it as the transaction's first
    write and commit soon after: the chain head stays locked until commit."""
    fields.setdefault("at", utcnow())
    # Microsecond precision survives every backend, so the hash recomputes identically.
    seq, prev = _take_head(session)
    fields["id"] = seq
    data = _clean(fields)
    h = row_hash(prev, data)
    session.execute(insert(GatewayAuditEvent).values(**data, prev_hash=prev, row_hash=h))
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=h))
    return GatewayAuditEvent(**data, prev_hash=prev, row_hash=h)


def record(database, **fields) -> None:
    """Append in a transaction of its own. The gateway never answers without its audit row:
    if this raises, the request fails (500) rather than serving unaudited."""
    with database.session() as s:
        append(s, **fields)


def verify_chain(session: Session, *, batch: int = 2000) -> tuple[bool, int | None, int]:
    """Recompute the chain. Returns (ok, first_bad_id, checked).

    first_bad_id is the id of the first row whose hash, link or sequence number is wrong, or
    the id that is missing (a deleted row, or rows cut off the end of the chain)."""
    head = session.get(AuditHead, 1)
    last_seq = head.last_seq if head is not None else 0
    prev, expected_id, checked = GENESIS_HASH, 1, 0
    cols = [GatewayAuditEvent.__table__.c[n] for n in _HASHED] + [
        GatewayAuditEvent.prev_hash, GatewayAuditEvent.row_hash]
    after = 0
    while True:
        rows = session.execute(
            select(*cols).where(GatewayAuditEvent.id > after, GatewayAuditEvent.id <= last_seq)
            .order_by(GatewayAuditEvent.id).limit(batch)
        ).mappings().all()
        if not rows:
            break
        for r in rows:
            fields = {k: r[k] for k in _HASHED}
            if r["id"] != expected_id or r["prev_hash"] != prev or row_hash(prev, fields) != r["row_hash"]:
                return False, (expected_id if r["id"] != expected_id else r["id"]), checked
            prev, expected_id, checked = r["row_hash"], expected_id + 1, checked + 1
            after = r["id"]
    if checked != last_seq:
        return False, expected_id, checked  # rows cut off the end
    if head is not None and last_seq and head.last_hash != prev:
        return False, last_seq, checked
    return True, None, checked


def chain_status(session: Session) -> dict:
    ok, bad, checked = verify_chain(session)
    return {"ok": ok, "first_bad_id": bad, "checked": checked}

