"""The audit chain on a plain psycopg connection (ipad_mdm.hot_connections), for the two hot paths:
edge_fast (the reverse-proxy decision) and docs_fast (a leader's read of a document).

One transaction of two prepared statements: the first takes the chain's head together with the
caller's lookup (TAKE_HEAD_CTE; the head's row stays locked until COMMIT, or ROLLBACK, which
gives the sequence number back), the second writes the row together with the new head
(APPEND_SQL), then COMMIT. The rows are the ones audit.append writes, hashed the same way.
Whatever fails here is declined (rolled back): the caller's full path answers, through
SQLAlchemy, and meets the same condition there (503, audit_unavailable).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ipad_mdm import hot_connections
from ipad_mdm.db import utcnow

from . import audit

log = logging.getLogger("document_gateway.audit")

TAKE_HEAD_CTE = ("WITH head AS (UPDATE gateway_audit_head SET last_seq = last_seq + 1 WHERE id = 1 "
                 "RETURNING last_seq, last_hash) ")
_COLUMNS = audit._HASHED + ["prev_hash", "row_hash", "chain_version"]
APPEND_SQL = (f"WITH appended AS (INSERT INTO gateway_audit_events ({', '.join(_COLUMNS)}) "
              f"VALUES ({', '.join(f'%({c})s' for c in _COLUMNS)})) "
              "UPDATE gateway_audit_head SET last_hash = %(row_hash)s WHERE id = 1")


@dataclass
class HeadTaken:
    """An open transaction holding the chain head; its lookup's row ends with (last_seq, last_hash)."""
    conn: object
    cur: object
    url: str
    row: tuple | None

    def append(self, key: bytes, fields: dict) -> int | None:
        """Write the row as the next number, move the head, COMMIT: its sequence number, or None
        (rolled back) for the full path."""
        import psycopg

        seq, prev = int(self.row[-2]), self.row[-1]
        data = audit._clean({**fields, "id": seq, "at": fields.get("at") or utcnow()})
        h = audit.row_hash(prev, data, key)
        try:
            self.cur.execute(APPEND_SQL, {**data, "prev_hash": prev, "row_hash": h,
                                          "chain_version": audit.CHAIN_VERSION}, prepare=True)
            self.conn.commit()
        except psycopg.Error as exc:
            _decline(self.conn, exc, self.url)
            return None
        except BaseException:
            hot_connections.rollback_and_give(self.conn)
            raise
        hot_connections.give(self.conn)
        return seq

    def abandon(self) -> None:
        hot_connections.rollback_and_give(self.conn)  # the sequence number it took is given back


def take_head(database, sql: str, params: dict) -> HeadTaken | None:
    """Run `sql` (TAKE_HEAD_CTE + the caller's lookup, ending with head.last_seq, head.last_hash) in a
    new transaction; None when the database cannot be used now (the full path answers)."""
    import psycopg

    conn = hot_connections.take(database, autocommit=False)
    if conn is None:
        return None  # the database is away: the full path answers 503
    try:
        cur = conn.cursor()
        cur.execute(sql, params, prepare=True)
        return HeadTaken(conn, cur, database.url, cur.fetchone())
    except psycopg.Error as exc:
        _decline(conn, exc, database.url)
        return None
    except BaseException:
        hot_connections.rollback_and_give(conn)
        raise


def _decline(conn, exc, url: str) -> None:
    import psycopg

    log.info("audit fast path declined: %s", type(exc).__name__)
    hot_connections.rollback_and_give(conn)
    if isinstance(exc, psycopg.OperationalError):
        hot_connections.forget(url)  # the others were opened to the same server: likely gone too
