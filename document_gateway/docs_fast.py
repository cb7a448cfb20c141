"""GET /docs/<id> for a leader who may read the document, on PostgreSQL: one transaction of two
prepared statements on a plain psycopg connection (ipad_mdm.hot_connections), as edge_fast does
for the reverse-proxy decision. Through SQLAlchemy the same answer took two sessions and six
statements (lookup, document, its units, chain head, row, new head): over serving the file alone
1.8 ms of CPU, p99 2.6 ms, against a target of 1 ms.

Statement one takes the audit chain's head and reads with it the identity, the device's
precomputed access state and the document with its units. The decision is gate.decide on that
row and the document checks are policy's, the same functions the full path calls. The view then
prepares its answer (the stored file, the range) and only then is the audit row appended with
the new head (statement two) and committed: nothing is served before its row is committed.
Anything else — a refusal, an unknown or not visible document, a device without an access row, a
range the view refuses, a database error — rolls back (the sequence number is given back) and
the full path decides, audits and answers it from scratch.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import namedtuple

from sqlalchemy.dialects import postgresql

from . import audit_hot, gate, policy
from .service import PUBLIC_ID

_Row = namedtuple("_Row", list(gate._LOOKUP.selected_columns.keys()))
_LOOKUP_SQL = str(gate._LOOKUP.compile(dialect=postgresql.psycopg.dialect()))
_DOCUMENT_SQL = (
    "SELECT d.id, d.public_id, d.filename, d.unit_id, d.all_units, d.visible_roles, d.classification, "
    "d.mime_type, d.sha256, d.withdrawn_at, "
    "ARRAY(SELECT u.unit_id FROM gateway_document_units u WHERE u.document_id = d.id ORDER BY u.unit_id) "
    "FROM gateway_documents d WHERE d.public_id = %(public_id)s")
_SQL = (audit_hot.TAKE_HEAD_CTE + "SELECT found.*, doc.*, head.last_seq, head.last_hash FROM head "
        f"LEFT JOIN ({_LOOKUP_SQL}) AS found ON true LEFT JOIN ({_DOCUMENT_SQL}) AS doc ON true")
_N_LOOKUP = len(_Row._fields)


@dataclasses.dataclass(frozen=True)
class DocumentFacts:
    """What the view and policy read of a document (the ORM row's attributes of the same names)."""
    id: int
    public_id: str
    filename: str
    unit_id: int
    all_units: bool
    visible_roles: list
    classification: str
    mime_type: str
    sha256: str
    withdrawn_at: dt.datetime | None
    visible_unit_ids: list


def open_document(inst, presented: gate.Presented, public_id: str) -> Opened | None:
    """The allowed read of `public_id` (its transaction open, the chain head taken), or None (rolled
    back) for the full path to answer. Finish it with Opened.commit(fields) or Opened.abandon()."""
    if not inst.database.is_postgres or presented.error is not None or not PUBLIC_ID.match(public_id):
        return None
    taken = audit_hot.take_head(inst.database, _SQL, {"fp": presented.fingerprint, "public_id": public_id})
    if taken is None:
        return None
    try:
        found = _judge(inst, presented, taken.row)
    except BaseException:
        taken.abandon()
        raise
    if found is None:
        taken.abandon()
        return None
    return Opened(*found, taken)


@dataclasses.dataclass
class Opened:
    """A read the fast path allows, its transaction open and the chain head taken."""
    decision: gate.Decision
    doc: DocumentFacts
    taken: audit_hot.HeadTaken

    def commit(self, key: bytes, fields: dict) -> bool:
        """Append the answer's audit row with the new head and commit. False (rolled back): the
        full path answers instead, and meets whatever stopped this one."""
        return self.taken.append(key, fields) is not None

    def abandon(self) -> None:
        self.taken.abandon()


def _judge(inst, presented: gate.Presented, found) -> tuple[gate.Decision, DocumentFacts] | None:
    if found is None:
        return None  # no chain head: the full path makes it
    row = _Row(*found[:_N_LOOKUP])
    if row.access_device_id is None:
        return None  # unknown or unbound certificate, or no access row yet: the full path says why
    decision = gate.decide(None, inst.ca, presented, lookup=lambda _s, _fp: row)
    if not decision.allowed:
        return None
    values = found[_N_LOOKUP:-2]
    if values[0] is None:
        return None  # no such document
    roles = values[5]
    doc = DocumentFacts(*values[:5], json.loads(roles) if isinstance(roles, str) else (roles or []), *values[6:10],
                        list(values[10] or ()))
    if policy.document_refusal(decision.leader_role, decision.leader_unit_id, doc) is not None:
        return None  # the full path refuses it with its reason
    return decision, doc
