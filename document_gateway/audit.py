"""The gateway's append-only, keyed hash chain of decisions, and its signed checkpoints.

Rows
----
Every row stores row_hash = HMAC-SHA256(audit key, prev_hash + canonical_json(row without the
hashes)) — chain_version 2. The audit key lives in the instance secrets (secrets/audit.key,
0600), not in the database: someone who can only write the database cannot recompute a valid
chain after changing, deleting or re-ordering a row. Rows written before the key existed
(chain_version 1, plain SHA-256) verify as such, but only before the first keyed row.

Appends are serialised by updating the single chain-head row *first*:
  * PostgreSQL: the UPDATE takes the head's row lock until commit; a concurrent appender
    waits, then (READ COMMITTED re-evaluates the UPDATE against the committed row) reads the
    new head, so two rows can never share a prev_hash.
  * SQLite: the UPDATE is the transaction's first statement and takes the database write lock
    (waiting up to busy_timeout), so the read-modify-write of the head is atomic as well.
The head's sequence number is the new row's primary key, so ids have no gaps.

Checkpoints
-----------
A checkpoint (sequence number, head hash, time) is signed (CMS, detached) with the
profile-signing key — on the PKCS#11 token when one is configured — and stored in
gateway_audit_checkpoints and appended to <instance>/audit/checkpoints.jsonl. Checkpoints
are written every 15 minutes (when the head moved) and into each monthly report. They anchor
the chain: rows cut off the end (with the head moved back) fall short of the last checkpoint,
and a rewritten row no longer matches the hash a checkpoint signed.

What verification checks (verify_chain): every row up to the head (ids, links, keyed hashes);
no row past the head; the head's hash; every checkpoint's signature and that its row still
carries the hash it signed; that the chain reaches the newest checkpoint (DB and file).

What the gateway does when the chain is damaged
-----------------------------------------------
* A row that cannot be appended (e.g. a forged row sits past the head): the gateway fails
  closed — no document is ever served without its audit row — answering 503 with the reason
  (code audit_unavailable) on every /docs/ request, logging it, and recording one security
  event. `ipad-mdm gateway audit-quarantine --confirm` moves the rows past the head into
  gateway_audit_quarantine (kept as evidence) and the gateway works again.
* Altered or missing rows behind the head: the periodic check raises the alarm (security event
  audit_chain_tampered, e-mail) and `ipad-mdm gateway audit-verify` names the first bad row.
  The gateway keeps serving: the chain going forward is intact and keyed.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
from pathlib import Path

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow

from .models import AuditCheckpoint, AuditHead, AuditQuarantine, GatewayAuditEvent

log = logging.getLogger("document_gateway.audit")

GENESIS_HASH = "0" * 64
CHAIN_VERSION = 2
_HASHED = [c.name for c in GatewayAuditEvent.__table__.columns
           if c.name not in ("prev_hash", "row_hash", "chain_version")]
# String columns are truncated before hashing so the stored value is exactly what was hashed.
_LIMITS = {c.name: c.type.length for c in GatewayAuditEvent.__table__.columns
           if getattr(c.type, "length", None) and c.name in _HASHED}


class AuditUnavailable(RuntimeError):
    """The decision cannot be recorded: the gateway must not answer with content."""


def _canonical_value(value):
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


# Keys in the order sort_keys would give them: the dict is built sorted, and json.dumps does not sort
# it again (every gateway request hashes a row; the sorting and a call per value were a sixth of it).
_SORTED = sorted(_HASHED)


# Columns added after rows were written: hashed only when set, so older rows keep their hashes
# (and a value written into an old row, or removed from a new one, still breaks its hash).
_OPTIONAL = frozenset({"request_method", "request_uri"})


def canonical_json(fields: dict) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as is: the same bytes on every backend."""
    out = {}
    for k in _SORTED:
        v = fields.get(k)
        if v is None and k in _OPTIONAL:
            continue
        out[k] = _canonical_value(v)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def row_hash(prev_hash: str, fields: dict, key: bytes | None, version: int = CHAIN_VERSION) -> str:
    message = (prev_hash + canonical_json(fields)).encode("utf-8")
    if version == 1:
        return hashlib.sha256(message).hexdigest()
    if not key:
        raise ValueError("the keyed chain needs the audit key")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _clean(fields: dict) -> dict:
    out = {k: fields.get(k) for k in _HASHED}
    for k, limit in _LIMITS.items():
        v = out[k]
        if isinstance(v, str) and len(v) > limit:
            out[k] = v[:limit]
    return out


# Built once (statement construction was a third of an append's CPU).
_TAKE_HEAD = (update(AuditHead).where(AuditHead.id == 1).values(last_seq=AuditHead.last_seq + 1)
              .returning(AuditHead.last_seq, AuditHead.last_hash))
_MOVE_HEAD = update(AuditHead).where(AuditHead.id == 1).values(last_hash=bindparam("new_hash"))
_INSERT_EVENT = insert(GatewayAuditEvent)


def _take_head(session: Session) -> tuple[int, str]:
    """Lock the chain head and reserve the next sequence number."""
    for _ in range(3):
        row = session.execute(_TAKE_HEAD).first()
        if row is not None:
            return int(row[0]), row[1]
        # The migration inserts the head; a schema made by create_all may lack it.
        try:
            with session.begin_nested():
                session.execute(insert(AuditHead).values(id=1, last_seq=0, last_hash=GENESIS_HASH))
        except IntegrityError:
            pass
    raise RuntimeError("gateway audit chain head row is missing and cannot be created")


def append(session: Session, key: bytes, **fields) -> GatewayAuditEvent:
    """Append one decision in the caller's transaction. Call it as the transaction's first
    write and commit soon after: the chain head stays locked until commit."""
    fields.setdefault("at", utcnow())
    seq, prev = _take_head(session)
    fields["id"] = seq
    data = _clean(fields)
    h = row_hash(prev, data, key)
    session.connection().execute(_INSERT_EVENT, [dict(data, prev_hash=prev, row_hash=h, chain_version=CHAIN_VERSION)])
    session.connection().execute(_MOVE_HEAD, {"new_hash": h})
    return GatewayAuditEvent(**data, prev_hash=prev, row_hash=h, chain_version=CHAIN_VERSION)


def record(database, key: bytes, **fields) -> None:
    """Append in a transaction of its own. Raises AuditUnavailable when the row cannot be
    appended: the gateway then answers without content (fail closed)."""
    try:
        with database.session() as s:
            append(s, key, **fields)
    except IntegrityError as exc:
        # The next sequence number is taken: a row exists past the head (forged or restored).
        log.error("gateway audit append failed: a row already exists past the chain head (%s)",
                  type(exc.orig).__name__)
        raise AuditUnavailable("a row exists past the audit chain head") from None


# ------------------------------------------------------------------ verification
@dataclasses.dataclass
class ChainStatus:
    ok: bool
    first_bad_id: int | None
    checked: int
    problem: str | None = None  # row_altered, row_missing, rows_truncated, row_beyond_head, head_mismatch,
    #                             checkpoint_invalid, checkpoint_mismatch
    detail: str | None = None
    last_checkpoint_seq: int | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_PROBLEM_TEXT = {
    "row_altered": ("dòng nhật ký số {id} đã bị sửa (mã băm có khoá hoặc liên kết không khớp)",
                    "row {id} was altered (its keyed hash or link does not verify)"),
    "row_missing": ("dòng nhật ký số {id} đã bị xoá hoặc đảo thứ tự", "row {id} is missing (deleted or re-ordered)"),
    "rows_truncated": ("các dòng nhật ký từ số {id} đã bị cắt khỏi cuối chuỗi",
                       "rows from {id} were cut off the end of the chain"),
    "row_beyond_head": ("dòng nhật ký số {id} được ghi ngoài cổng tài liệu (sau đầu chuỗi)",
                        "row {id} lies past the chain head (written outside the gateway)"),
    "head_mismatch": ("đầu chuỗi không khớp với dòng số {id}", "the chain head does not match row {id}"),
    "checkpoint_invalid": ("điểm kiểm tra tại dòng số {id} có chữ ký số không hợp lệ",
                           "checkpoint at row {id} has an invalid signature"),
    "checkpoint_mismatch": ("dòng số {id} không còn khớp với điểm kiểm tra đã ký",
                            "row {id} no longer carries the hash its signed checkpoint recorded"),
}


def describe(status: ChainStatus, lang: str = "en") -> str:
    if status.ok:
        return (f"chuỗi nhật ký nguyên vẹn: đã kiểm tra {status.checked} dòng" if lang == "vi"
                else f"audit chain intact: {status.checked} rows checked")
    vi, en = _PROBLEM_TEXT.get(status.problem or "", ("dòng số {id} không hợp lệ", "row {id} is bad"))
    return (vi if lang == "vi" else en).format(id=status.first_bad_id)


def verify_chain(session: Session, key: bytes | None, *, checkpoints: list[dict] | None = None,
                 verify_signature=None, batch: int = 2000, start: tuple[int, str] | None = None,
                 unkeyed_up_to: int = 0) -> ChainStatus:
    """Recompute the chain (from `start` = (seq, hash) of a trusted checkpoint, or from the
    beginning) and check it against the head and the checkpoints. Unkeyed rows (chain_version 1)
    are accepted only up to `unkeyed_up_to`, the head when the audit key was created (kept in the
    instance secrets): relabelling forged rows as "old" does not make them verify."""
    head = session.get(AuditHead, 1)
    last_seq = head.last_seq if head is not None else 0
    after, prev = start or (0, GENESIS_HASH)
    expected_id, checked = after + 1, 0
    keyed_seen = start is not None and start[0] > 0 and _version_of(session, start[0]) == CHAIN_VERSION
    if start is not None and start[0] > 0:
        at_start = session.scalar(select(GatewayAuditEvent.row_hash).where(GatewayAuditEvent.id == start[0]))
        if at_start != start[1]:
            return ChainStatus(False, start[0], 0, "checkpoint_mismatch")
    hashes: dict[int, str] = {}
    wanted = {c["seq"] for c in checkpoints or ()}
    cols = [GatewayAuditEvent.__table__.c[n] for n in _HASHED] + [
        GatewayAuditEvent.prev_hash, GatewayAuditEvent.row_hash, GatewayAuditEvent.chain_version]
    while True:
        rows = session.execute(
            select(*cols).where(GatewayAuditEvent.id > after, GatewayAuditEvent.id <= last_seq)
            .order_by(GatewayAuditEvent.id).limit(batch)
        ).mappings().all()
        if not rows:
            break
        for r in rows:
            if r["id"] != expected_id:
                return ChainStatus(False, expected_id, checked, "row_missing")
            version = r["chain_version"] or 1
            if version == 1 and (keyed_seen or r["id"] > unkeyed_up_to):
                return ChainStatus(False, r["id"], checked, "row_altered", "unkeyed row where only keyed rows may be")
            keyed_seen = keyed_seen or version == CHAIN_VERSION
            fields = {k: r[k] for k in _HASHED}
            if r["prev_hash"] != prev or not hmac.compare_digest(row_hash(prev, fields, key, version), r["row_hash"]):
                return ChainStatus(False, r["id"], checked, "row_altered")
            if r["id"] in wanted:
                hashes[r["id"]] = r["row_hash"]
            prev, expected_id, checked = r["row_hash"], expected_id + 1, checked + 1
            after = r["id"]
    if after != last_seq:
        return ChainStatus(False, after + 1, checked, "rows_truncated")
    beyond = session.scalar(select(func.min(GatewayAuditEvent.id)).where(GatewayAuditEvent.id > last_seq))
    if beyond is not None:
        return ChainStatus(False, beyond, checked, "row_beyond_head")
    if head is not None and last_seq and head.last_hash != prev:
        return ChainStatus(False, last_seq, checked, "head_mismatch")
    newest = None
    for cp in sorted(checkpoints or (), key=lambda c: c["seq"]):
        if verify_signature is not None and not verify_signature(cp):
            return ChainStatus(False, cp["seq"], checked, "checkpoint_invalid", last_checkpoint_seq=newest)
        if cp["seq"] > last_seq:
            return ChainStatus(False, last_seq + 1, checked, "rows_truncated",
                               f"the chain ends at {last_seq}, a signed checkpoint covers {cp['seq']}",
                               last_checkpoint_seq=cp["seq"])
        if cp["seq"] in hashes and hashes[cp["seq"]] != cp["head_hash"]:
            return ChainStatus(False, cp["seq"], checked, "checkpoint_mismatch", last_checkpoint_seq=newest)
        newest = cp["seq"]
    return ChainStatus(True, None, checked, last_checkpoint_seq=newest)


def _version_of(session: Session, seq: int) -> int | None:
    return session.scalar(select(GatewayAuditEvent.chain_version).where(GatewayAuditEvent.id == seq))


# ------------------------------------------------------------------ checkpoints
def _checkpoint_bytes(seq: int, head_hash: str, at: dt.datetime) -> bytes:
    return json.dumps({"seq": seq, "head_hash": head_hash, "at": _canonical_value(at)},
                      sort_keys=True, separators=(",", ":")).encode()


def checkpoint_file(instance) -> Path:
    return instance.settings.instance_dir / "audit" / "checkpoints.jsonl"


def signature_checker(instance):
    """verify_signature(checkpoint dict) -> bool: a CMS signature by a certificate our CA issued."""
    import base64

    from ipad_mdm.crypto import cms

    def check(cp: dict) -> bool:
        try:
            at = dt.datetime.fromisoformat(cp["at"].replace("Z", "+00:00")) if isinstance(cp["at"], str) else cp["at"]
            signed = cms.verify(base64.b64decode(cp["signature"]),
                                detached_content=_checkpoint_bytes(cp["seq"], cp["head_hash"], at))
            return instance.ca.issued_this(signed.signer)
        except Exception:
            return False

    return check


def all_checkpoints(session: Session, instance) -> list[dict]:
    """Checkpoints from the database and from the instance file (an attacker of the database
    alone cannot remove the latter), merged by sequence number."""
    import base64

    merged: dict[tuple[int, str], dict] = {}
    for row in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)):
        cp = {"seq": row.seq, "head_hash": row.head_hash, "at": row.at,
              "signature": base64.b64encode(row.signature).decode(), "source": "database"}
        merged[(row.seq, row.head_hash)] = cp
    path = checkpoint_file(instance)
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                cp = json.loads(line)
                merged.setdefault((int(cp["seq"]), str(cp["head_hash"])), {**cp, "source": "file"})
            except (ValueError, KeyError, TypeError):
                log.error("unreadable line in %s", path)
    return sorted(merged.values(), key=lambda c: c["seq"])


def write_checkpoint(session: Session, instance) -> AuditCheckpoint | None:
    """Sign the current head (if it moved since the last checkpoint) and store it."""
    import base64

    from ipad_mdm.crypto import cms
    from ipad_mdm.files import private_dir

    head = session.get(AuditHead, 1)
    if head is None or head.last_seq == 0:
        return None
    last = session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1))
    if last is not None and last.seq == head.last_seq:
        return last
    at = utcnow().replace(microsecond=0)
    signature = cms.sign(_checkpoint_bytes(head.last_seq, head.last_hash, at), instance.signer_cert,
                         instance.signer_key, detached=True)
    row = AuditCheckpoint(seq=head.last_seq, head_hash=head.last_hash, at=at, signature=signature)
    session.add(row)
    session.flush()
    path = checkpoint_file(instance)
    private_dir(path.parent)
    line = json.dumps({"seq": row.seq, "head_hash": row.head_hash, "at": _canonical_value(at),
                       "signature": base64.b64encode(signature).decode()}, sort_keys=True)
    with open(path, "a", opener=lambda p, flags: os.open(p, flags, 0o600)) as f:
        f.write(line + "\n")
    return row


def latest_checkpoint(session: Session, before: dt.datetime | None = None) -> AuditCheckpoint | None:
    stmt = select(AuditCheckpoint)
    if before is not None:
        stmt = stmt.where(AuditCheckpoint.at < before)
    return session.scalar(stmt.order_by(AuditCheckpoint.seq.desc()).limit(1))


def check_and_checkpoint(database, instance) -> ChainStatus:
    """The periodic job: verify from the newest checkpoint that verifies, raise the alarm if
    anything is wrong, else sign a new checkpoint. A full verification runs when there is no
    checkpoint yet (and with `ipad-mdm gateway audit-verify`)."""
    with database.session() as s:
        cps = all_checkpoints(s, instance)
        checker = signature_checker(instance)
        start = None
        trusted = [c for c in cps if checker(c)]
        if trusted:
            start = (trusted[-1]["seq"], trusted[-1]["head_hash"])
        status = verify_chain(s, instance.audit_key, checkpoints=cps, verify_signature=checker, start=start,
                              unkeyed_up_to=instance.audit_unkeyed_up_to)
        if start is not None and status.ok and len(trusted) != len(cps):
            bad = next(c for c in cps if c not in trusted)
            status = ChainStatus(False, bad["seq"], status.checked, "checkpoint_invalid")
        if not status.ok:
            raise_alarm(s, status)
        else:
            write_checkpoint(s, instance)
    return status


def full_check(session: Session, instance) -> ChainStatus:
    return verify_chain(session, instance.audit_key, checkpoints=all_checkpoints(session, instance),
                        verify_signature=signature_checker(instance), unkeyed_up_to=instance.audit_unkeyed_up_to)


_SOURCE_VI = {"periodic check": "kiểm tra định kỳ", "daily verification": "kiểm tra hằng ngày",
              "audit-verify": "lệnh kiểm tra audit-verify", "gateway append": "khi ghi nhật ký của cổng tài liệu"}


def raise_alarm(session: Session, status: ChainStatus, *, source: str = "periodic check") -> None:
    from ipad_mdm import security_events

    text, vi = describe(status), describe(status, "vi")
    log.error("GATEWAY AUDIT CHAIN DAMAGED (%s): %s", source, text)
    security_events.record(
        session, "audit_chain_tampered",
        summary_vi=f"Kiểm tra toàn vẹn nhật ký truy cập tài liệu ({_SOURCE_VI.get(source, source)}): {vi}. Đề nghị cán bộ phụ trách an toàn "
                   "thông tin kiểm tra ngay (lệnh ipad-mdm gateway audit-verify).",
        summary_en=f"Document access log integrity check ({source}): {text}. Investigate at once "
                   "(ipad-mdm gateway audit-verify).",
        # One open alarm for the chain until a security officer acknowledges it, not one per finding.
        details={**status.as_dict(), "key": "chain"}, dedupe=True)


def first_row_beyond_head(session: Session) -> int | None:
    head = session.get(AuditHead, 1)
    return session.scalar(select(func.min(GatewayAuditEvent.id)).where(
        GatewayAuditEvent.id > (head.last_seq if head is not None else 0)))


def quarantine_beyond_head(session: Session) -> int:
    """Move rows past the head (which block every append) into gateway_audit_quarantine."""
    head = session.get(AuditHead, 1)
    last_seq = head.last_seq if head is not None else 0
    rows = session.execute(select(GatewayAuditEvent).where(GatewayAuditEvent.id > last_seq)).scalars().all()
    for r in rows:
        data = {c.name: _canonical_value(getattr(r, c.name)) for c in GatewayAuditEvent.__table__.columns}
        session.add(AuditQuarantine(original_id=r.id, row=data, quarantined_at=utcnow()))
    if rows:
        session.flush()
        session.execute(_allow_delete(session))
        session.execute(delete(GatewayAuditEvent).where(GatewayAuditEvent.id > last_seq))
        session.execute(_allow_delete(session, restore=True))
    return len(rows)


def _allow_delete(session: Session, *, restore: bool = False):
    """The append-only trigger refuses deletes; quarantine lifts it inside this transaction only."""
    from sqlalchemy import text

    if session.get_bind().dialect.name == "postgresql":
        return text("ALTER TABLE gateway_audit_events " + ("ENABLE" if restore else "DISABLE")
                    + " TRIGGER gateway_audit_append_only")
    if restore:
        return text("CREATE TRIGGER gateway_audit_no_delete BEFORE DELETE ON gateway_audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'gateway_audit_events is append-only'); END")
    return text("DROP TRIGGER IF EXISTS gateway_audit_no_delete")


def chain_status(session: Session, instance) -> dict:
    status = full_check(session, instance)
    return {**status.as_dict(), "description": describe(status), "description_vi": describe(status, "vi")}
