"""PostgreSQL sessions run in UTC whatever the server's default, so the driver hands out datetimes in
datetime.timezone.utc as they are (no conversion per value); a URL that sets its own `options` keeps
them, and every datetime still comes back as the same instant, in UTC."""
from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text

from ipad_mdm.db import Database, UTCDateTime
from tests.conftest import fresh_postgres_database

HANOI = dt.timezone(dt.timedelta(hours=7))
_meta = MetaData()
_moments = Table("tz_moments", _meta, Column("id", Integer, primary_key=True), Column("at", UTCDateTime))


def _round_trip(db: Database) -> dt.datetime:
    _meta.create_all(db.engine)
    stored = dt.datetime(2026, 12, 31, 23, 30, tzinfo=HANOI)  # 16:30 UTC the same day
    with db.session() as s:
        s.execute(insert(_moments).values(id=1, at=stored))
    with db.session() as s:
        back = s.scalar(select(_moments.c.at).where(_moments.c.id == 1))
    assert back == stored and back.tzinfo is dt.timezone.utc and back.hour == 16
    return back


def test_sessions_run_in_utc_even_when_the_server_default_is_local():
    with fresh_postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" SET timezone TO \'Asia/Ho_Chi_Minh\''))
        admin.dispose()
        plain = create_engine(url)
        with plain.connect() as c:  # what a connection without our option gets
            assert c.execute(text("SHOW timezone")).scalar() == "Asia/Ho_Chi_Minh"
        plain.dispose()
        db = Database(url)
        try:
            with db.session() as s:
                assert s.execute(text("SHOW timezone")).scalar() == "UTC"
                assert s.execute(text("SELECT now()")).scalar().tzinfo is dt.timezone.utc
            _round_trip(db)
            from ipad_mdm import hot_connections

            conn = hot_connections.take(db, autocommit=True)  # the fast paths' own connections
            try:
                assert conn.execute("SHOW timezone").fetchone()[0] == "UTC"
                assert conn.execute("SELECT now()").fetchone()[0].tzinfo is dt.timezone.utc
            finally:
                hot_connections.drop(conn)
        finally:
            db.dispose()


def test_a_url_with_its_own_options_keeps_them():
    with fresh_postgres_database() as url:
        db = Database(f"{url}?options={quote('-c statement_timeout=4321')}")
        try:
            with db.session() as s:
                assert s.execute(text("SHOW statement_timeout")).scalar() == "4321ms"
            _round_trip(db)  # converted to UTC by the column type instead
        finally:
            db.dispose()
