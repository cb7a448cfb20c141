"""The event bus's promise, on a real database: a failing non-critical handler's writes are undone,
the failure is reported in its outcome and the other handlers' work is kept; a critical handler's
failure fails the whole unit of work; work announced with db.after_commit happens once, and only for
what was kept. The subscribers of one event share one SAVEPOINT until one fails (then each runs
again in its own), so these are checked with several subscribers per event."""
from __future__ import annotations

import pytest
from sqlalchemy import event, select

from ipad_mdm.db import Base, Database, after_commit
from ipad_mdm.hooks import Hooks
from ipad_mdm.models import Unit
from ipad_mdm.packages import import_all_models


@pytest.fixture
def db(database_url):
    import_all_models()
    database = Database(database_url)
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def _writer(code: str, announced: list, *, fail: bool = False):
    def handler(session, device):
        session.add(Unit(code=code, name_vi=code))
        session.flush()
        after_commit(session, lambda: announced.append(code))
        if fail:
            raise RuntimeError(f"{code} broke")
        return {"wrote": code}
    handler.__qualname__ = f"writer_{code}"
    return handler


def _statements(db: Database) -> list[str]:
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda c, cur, stmt, *a: seen.append(stmt.split()[0].upper()))
    return seen


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_one_failing_handler_is_undone_alone_and_the_others_are_kept_once(db):
    hooks, announced = Hooks(), []
    for code, fail in (("A", False), ("B", True), ("C", False)):
        hooks.subscribe("device.authenticated", _writer(code, announced, fail=fail), name=code)
    hooks.subscribe("device.authenticated", _writer("D", announced), name="D", when=lambda **_: False)
    with db.session() as s:
        outcomes = hooks.emit("device.authenticated", session=s, device=None)
        assert announced == []  # nothing announced before the commit
    assert [(o["subscriber"], o["status"]) for o in outcomes] == [
        ("A", "done"), ("B", "failed"), ("C", "done"), ("D", "not_applicable")]
    assert outcomes[0]["wrote"] == "A" and "RuntimeError: B broke" in outcomes[1]["detail"]
    with db.session() as s:
        assert sorted(s.scalars(select(Unit.code))) == ["A", "C"]
    # A ran twice (once together with B, undone, once on its own); its announcement survives once.
    assert sorted(announced) == ["A", "C"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_handlers_that_all_succeed_share_one_savepoint(db):
    hooks, announced = Hooks(), []
    for code in ("A", "B", "C"):
        hooks.subscribe("device.authenticated", _writer(code, announced), name=code)
    seen = _statements(db)
    with db.session() as s:
        outcomes = hooks.emit("device.authenticated", session=s, device=None)
    assert [o["status"] for o in outcomes] == ["done", "done", "done"]
    assert seen.count("SAVEPOINT") == 1 and seen.count("RELEASE") == 1, seen
    with db.session() as s:
        assert sorted(s.scalars(select(Unit.code))) == ["A", "B", "C"]
    assert announced == ["A", "B", "C"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_critical_handler_failure_fails_the_unit_of_work(db):
    hooks, announced = Hooks(), []
    hooks.subscribe("device.authenticated", _writer("A", announced), name="A")
    hooks.subscribe("device.authenticated", _writer("B", announced, fail=True), name="B", critical=True)
    hooks.subscribe("device.authenticated", _writer("C", announced), name="C")
    with pytest.raises(RuntimeError, match="B broke"):
        with db.session() as s:
            s.add(Unit(code="caller", name_vi="caller"))
            hooks.emit("device.authenticated", session=s, device=None)
    with db.session() as s:
        assert list(s.scalars(select(Unit.code))) == []
    assert announced == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_subscribers_that_do_not_apply_open_no_savepoint(db):
    """The scheduled compliance run emits verdict.changed for thousands of devices at once; a
    SAVEPOINT for subscribers none of which applies would be two statements per device for nothing."""
    hooks, announced = Hooks(), []
    for code in ("A", "B", "C"):
        hooks.subscribe("device.authenticated", _writer(code, announced), name=code, when=lambda **_: False)
    seen = _statements(db)
    with db.session() as s:
        outcomes = hooks.emit("device.authenticated", session=s, device=None)
    assert [o["status"] for o in outcomes] == ["not_applicable"] * 3
    assert "SAVEPOINT" not in seen and announced == []
