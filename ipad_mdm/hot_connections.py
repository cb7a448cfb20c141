"""Plain psycopg connections for the two hot paths (the idle check-in and the reverse-proxy decision),
kept apart from the SQLAlchemy pool: taking a connection from that pool and giving it back (checkout
events, reset on return, the fairy objects) cost a fifth of such a request. Here it is a list pop
and append under a lock.

Connections are made from the engine's own connect arguments, so a multi-host URL with
target_session_attrs still finds the primary after a failover. A connection that fails is closed
and forgotten; the caller falls back to its full path (which answers 503 while the database is
away) and the next request connects again. A forked child starts with none (its parent's sockets
are not its own)."""
from __future__ import annotations

import os
import threading

KEEP = 16  # idle connections kept per database and mode (a worker's threads, with room)
_lock = threading.Lock()
_idle: dict[tuple[str, bool], list] = {}


def _after_fork_in_child() -> None:
    global _lock, _idle
    _lock, _idle = threading.Lock(), {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def take(database, *, autocommit: bool):
    """An idle connection to `database` (PostgreSQL), a new one, or None when none can be opened now.
    Give it back with give() (or drop() it) when done."""
    import psycopg

    key = (database.url, autocommit)
    with _lock:
        idle = _idle.get(key)
        conn = idle.pop() if idle else None
    if conn is not None and not conn.closed:
        return conn
    try:
        conn = connect(database, autocommit=autocommit)
    except psycopg.Error:
        return None
    conn._hot_key = key
    return conn


def connect(database, *, autocommit: bool, **extra):
    """A new plain psycopg connection made as the engine makes its own (raises psycopg.Error)."""
    import psycopg

    cargs, cparams = database.engine.dialect.create_connect_args(database.engine.url)
    return psycopg.connect(*cargs, **{**cparams, **database.connect_args, "connect_timeout": 5,
                                      "autocommit": autocommit, **extra})


def give(conn) -> None:
    """Back to the idle list if it is healthy and outside a transaction; else closed."""
    from psycopg.pq import TransactionStatus

    if conn.broken or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        drop(conn)
        return
    with _lock:
        idle = _idle.setdefault(conn._hot_key, [])
        if len(idle) < KEEP:
            idle.append(conn)
            return
    conn.close()


def rollback_and_give(conn) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - a broken connection is closed and forgotten
        drop(conn)
        return
    give(conn)


def forget(url: str) -> None:
    """Close the idle connections to the database at `url` (Database.dispose)."""
    with _lock:
        gone = [c for key in [k for k in _idle if k[0] == url] for c in _idle.pop(key)]
    for conn in gone:
        drop(conn)


def drop(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
        pass
