"""Database engine, sessions and schema migrations (Alembic)."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from pathlib import Path

import orjson

from sqlalchemy import JSON, DateTime, create_engine, event, insert, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use UTC-aware datetimes")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None or value.tzinfo is dt.timezone.utc:  # PostgreSQL's sessions run in UTC (Database)
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict: JSON(), list: JSON()}


# Any run of 19 digits (an integer that may not fit 64 bits, or a long fraction) takes the exact path.
# Found by mapping digits to "1" and everything else to "0" (bytes.translate) and searching for nineteen
# "1"s: a memory-speed pass, where a regular expression took thirty times orjson's own parse on an
# inventory full of base64 certificates.
_DIGIT_MAP = bytes(49 if 48 <= i <= 57 else 48 for i in range(256))
_DIGIT_RUN = b"1" * 19


def _has_long_number(data) -> bool:
    if len(data) < 19:
        return False
    raw = data.encode() if data.__class__ is str else data if data.__class__ is bytes else bytes(data)
    return _DIGIT_RUN in raw.translate(_DIGIT_MAP)


def json_loads(data):
    """JSON columns decoded by orjson: the scheduled compliance run reads seven JSON values per iPad
    (inventory, verdict), 70,000 for an office of 10,000, and the standard library's decoder was a third
    of its time. orjson reads integers beyond 64 bits as floats, so a value with a very long number is
    decoded by the standard library instead (exactly as stored), as is anything orjson refuses (NaN)."""
    if not _has_long_number(data):
        try:
            return orjson.loads(data)  # str, bytes or psycopg's memoryview, without a copy
        except orjson.JSONDecodeError:
            pass
    return json.loads(bytes(data) if isinstance(data, memoryview) else data)


def json_dumps(value) -> str:
    """orjson for our own rows (verdicts, transitions); what it refuses (integers beyond 64 bits) goes
    through the standard library."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def among(session: Session, column, ids) -> ColumnElement:
    """column IN ids; on PostgreSQL as `= ANY(array)`: one parameter instead of thousands (each
    expanded, converted and sent on its own)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import ARRAY, Integer, bindparam, func

        return column == func.any(bindparam("ids", list(ids), type_=ARRAY(Integer)))
    return column.in_(list(ids))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    # Forgotten secrets (answered command payloads, PINs) must not linger in free pages.
    cur.execute("PRAGMA secure_delete=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# ------------------------------------------------------------------ after commit
_AFTER_COMMIT = "ipad_mdm.after_commit"


def add_row(session: Session, model, **values) -> None:
    """Write one row that nothing in this transaction reads back (a history or log row on a device's
    request path): a core INSERT, without the unit of work's object, identity-map entry and flush,
    about half a millisecond of CPU each. Pending ORM changes are flushed first, as for any query."""
    session.execute(insert(model.__table__), [values])


def after_commit(session: Session, fn, *, outermost: bool = False) -> None:
    """Run `fn()` once the session's outermost transaction commits; forget it if the
    transaction (or the savepoint it was registered in) rolls back.

    The one mechanism for work that talks to the outside (pushes, e-mail, VPN sync):
    never announce what the database did not keep. `outermost`: tie `fn` to the outermost
    transaction even inside a savepoint (for work that only reads committed state, such as a
    regeneration asked for once per transaction: a savepoint rolled back must not cancel it for
    the rest of the transaction)."""
    marker = (None if outermost else session.get_nested_transaction()) or session.get_transaction()
    session.info.setdefault(_AFTER_COMMIT, []).append((marker, fn))


def transaction_state(session: Session, key: str, make=None):
    """State that lives as long as the session's current transaction (the next transaction of the
    same session starts afresh): the value kept under `key`, made by `make()` the first time it is
    asked for with one, so `make` also runs once per transaction; None when there is none yet and
    no `make`."""
    transaction = session.get_transaction()
    held = session.info.get(key)
    if held is not None and held[0] is transaction:
        return held[1]
    if make is None:
        return None
    value = make()
    session.info[key] = (transaction, value)
    return value


def after_commit_once(session: Session, key: str, fn) -> bool:
    """Run `fn()` once the outermost transaction commits, asked for at most once per transaction under
    `key` (True the first time). For work that reads only what committed (a regeneration, a pump, a
    pass over pending rows): a SAVEPOINT rolled back does not cancel it for the rest of the transaction."""
    if not once_per_transaction(session, key):
        return False
    after_commit(session, fn, outermost=True)
    return True


def gather_after_commit(session: Session, key: str, make, send):
    """A collection (made by `make()`) that the current transaction or SAVEPOINT gathers under `key`,
    handed to `send(collection)` once it commits; forgotten with the SAVEPOINT if that rolls back. One
    message per transaction or SAVEPOINT: never one for changes that were undone, and what is gathered
    after a SAVEPOINT rolled back still goes (it is gathered for the enclosing transaction)."""
    marker = session.get_nested_transaction() or session.get_transaction()
    held = session.info.get(key)
    if held is not None and held[0] is marker:
        return held[1]
    value = make()
    session.info[key] = (marker, value)

    def sent():
        if session.info.get(key, (None,))[0] is marker:
            session.info.pop(key, None)
        send(value)

    after_commit(session, sent)
    return value


def once_per_transaction(session: Session, key: str) -> bool:
    """True the first time `key` is asked for in the session's current transaction, False after."""
    if transaction_state(session, key) is not None:
        return False
    transaction_state(session, key, lambda: True)
    return True


def hold(session: Session, row) -> None:
    """Keep `row` referenced until the session's transaction ends. The identity map holds clean rows
    weakly: one read early in a request and needed again later (at commit, by another package) would
    otherwise be collected in between and queried a second time."""
    transaction_state(session, _HELD, list).append(row)


_HELD = "ipad_mdm.db.held"


def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # SQLAlchemy fires after_commit when a SAVEPOINT is released too: wait for the real one
    pending = session.info.pop(_AFTER_COMMIT, None)
    if not pending:
        return
    # A dispatcher that can batch sends every task these callbacks submit as one message.
    batched = getattr(session.info.get("dispatcher"), "batched", None)
    with batched(session) if batched is not None else contextlib.nullcontext():
        for _marker, fn in pending:
            try:
                fn()
            except Exception:  # one failing callback must not stop the others
                logging.getLogger("ipad_mdm.db").exception("after-commit callback %r failed", fn)


def _drop_rolled_back(session: Session, previous_transaction) -> None:
    pending = session.info.get(_AFTER_COMMIT)
    if not pending:
        return
    if previous_transaction.parent is None:
        session.info.pop(_AFTER_COMMIT, None)
        return

    def inside(tx) -> bool:
        while tx is not None:
            if tx is previous_transaction:
                return True
            tx = tx.parent
        return False

    session.info[_AFTER_COMMIT] = [(m, fn) for m, fn in pending if not inside(m)]


event.listen(Session, "after_commit", _run_after_commit)
event.listen(Session, "after_soft_rollback", _drop_rolled_back)


@contextlib.contextmanager
def savepoint(session: Session):
    """A SAVEPOINT that confines a failure to what ran inside it, on every backend.

    pysqlite opens its transaction lazily, at the first INSERT/UPDATE/DELETE; a SAVEPOINT
    issued before that would start SQLite's transaction itself and its RELEASE would commit
    everything. A no-op UPDATE first makes pysqlite begin the real transaction."""
    if session.get_bind().dialect.name == "sqlite":
        dbapi = session.connection().connection.dbapi_connection
        if not getattr(dbapi, "in_transaction", False):
            session.execute(text("UPDATE units SET id = id WHERE 0 = 1"))
    with session.begin_nested():
        yield


IDLE_PING_SECONDS = 2.0


def ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout when it has been idle IDLE_PING_SECONDS or more; a dead one
    is replaced there (the pool retries the checkout with a new connection), not met by a request.
    With libpq's multi-host URLs (target_session_attrs=read-write) the new connection goes to
    whichever server is the primary now."""
    import time

    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping runs, here only when idle
        except Exception as exc:  # noqa: BLE001 - any failure of the ping means the connection is gone
            raise DisconnectionError(f"stale pooled connection ({type(exc).__name__})") from exc


class Database:
    def __init__(self, url: str, echo: bool = False):
        self.url = url
        kwargs: dict = {"echo": echo, "future": True, "json_deserializer": json_loads}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # No pre-ping on every checkout (a round trip per request): only a connection that sat
            # unused for IDLE_PING_SECONDS is pinged (see ping_when_idle), and LIFO keeps the busy
            # ones busy, so under load nothing is pinged while after a database restart or failover
            # the stale connections are replaced before a request meets them.
            kwargs.update(pool_pre_ping=False, pool_size=10, max_overflow=20, pool_recycle=1800, pool_use_lifo=True)
            if "options" not in make_url(url).query:
                # Sessions in UTC, whatever the server's default: the driver then hands out datetimes
                # in datetime.timezone.utc as they are, where in another zone (even "Etc/UTC") it and
                # UTCDateTime converted every value twice, a tenth of the scheduled compliance run.
                kwargs["connect_args"] = {"options": "-c TimeZone=UTC"}
        self.engine: Engine = create_engine(url, **kwargs)
        self.connect_args: dict = dict(kwargs.get("connect_args", {}))  # the hot paths' own connections too
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            ping_when_idle(self.engine)
        self.sessionmaker = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._on_dispose: list = []

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def session(self, **info):
        """A unit of work: commits on success, rolls back on any exception. `info` goes to
        session.info (e.g. dispatcher=…, so work for the outside world leaves after commit)."""
        s: Session = self.sessionmaker()
        s.info.update(info)
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def migrate(self) -> None:
        """Bring the schema to the newest revision of every branch."""
        cfg = alembic_config(self)
        if self._at_heads(cfg):
            return  # the common case (every CLI call, every worker): no need to load every package's models
        from alembic import command

        command.upgrade(cfg, "heads")

    def _at_heads(self, cfg) -> bool:
        from alembic.script import ScriptDirectory
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                current = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
        except SQLAlchemyError:
            return False  # a new database: no version table yet
        if not current:
            return False
        script = ScriptDirectory.from_config(cfg)
        try:
            # Every head reached: stored, or below a stored revision (a depends_on target, like
            # 0003_profiles under 0012_identity_tables, is a "head" Alembic does not store).
            reached = {r.revision for r in script.iterate_revisions(tuple(current), "base")}
        except Exception:
            return False  # a revision this code does not know: let upgrade say what is wrong
        return set(script.get_heads()) <= reached

    def triggers_enabled(self, *names: str) -> bool:
        """PostgreSQL: every one of these triggers exists and is enabled. Work that trusts what a
        trigger maintains (a NOTIFY, a renewed number) asks first: a schema not made by the
        migrations, or a trigger disabled by hand, has none of it."""
        if not self.is_postgres:
            return False
        with self.engine.connect() as conn:
            found = conn.execute(text("SELECT count(DISTINCT tgname) FROM pg_trigger WHERE tgname = ANY(:names) "
                                      "AND tgenabled <> 'D'"), {"names": list(names)}).scalar()
        return found == len(set(names))

    def on_dispose(self, fn) -> None:
        """Call fn() when this database is disposed (a thread of its own to stop, say)."""
        self._on_dispose.append(fn)

    def dispose(self) -> None:
        for fn in self._on_dispose:
            fn()
        self._on_dispose.clear()
        self.engine.dispose()
        from . import hot_connections

        hot_connections.forget(self.url)


def alembic_config(database: Database):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["engine"] = database.engine
    cfg.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    return cfg
