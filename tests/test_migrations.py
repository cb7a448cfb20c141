"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from ipad_mdm.db import Base, Database, alembic_config
from ipad_mdm.packages import import_all_models


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_migrations_match_models(database_url):
    import_all_models()
    db = Database(database_url)
    try:
        db.migrate()
        db.migrate()  # idempotent
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
            heads = set(ctx.get_current_heads())
        assert diff == [], diff
        script = ScriptDirectory.from_config(alembic_config(db))
        # Nothing left to apply on any branch (a head that another branch depends on
        # is recorded through its dependant, so compare pending work, not head lists).
        assert list(script.iterate_revisions("heads", tuple(heads))) == []
    finally:
        db.dispose()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_enrolled_ipads_without_a_record_are_adopted_by_the_migration(database_url):
    """0018: iPads enrolled with CLI/API tokens before the upgrade join the handover workflow."""
    import sqlalchemy as sa
    from alembic import command

    import_all_models()
    db = Database(database_url)
    try:
        cfg = alembic_config(db)
        script = ScriptDirectory.from_config(cfg)
        for head in script.get_heads():
            # Every branch to its head, except the console branch (stopped before 0018).
            if "0018_console_adopt" not in {r.revision for r in script.iterate_revisions(head, "base")}:
                command.upgrade(cfg, head)
        command.upgrade(cfg, "0010_console_throttle")
        with db.engine.begin() as conn:
            devices = sa.Table("devices", sa.MetaData(), autoload_with=conn)
            from ipad_mdm.db import utcnow

            # Every NOT NULL column without a server default gets a plain value of its type.
            plain = {sa.Boolean: False, sa.Integer: 0, sa.String: "", sa.Text: ""}
            base = {c.name: next(v for t, v in plain.items() if isinstance(c.type, t)) for c in devices.columns
                    if not c.nullable and c.server_default is None and not c.primary_key
                    and any(isinstance(c.type, t) for t in plain)}
            conn.execute(devices.insert(), [
                {**base, "udid": "UDID-ADOPT-1", "serial_number": " dmp adopt 1 ", "enrollment_state": "enrolled",
                 "product_name": "iPad13,18", "enrolled_at": utcnow()},
                {**base, "udid": "UDID-GONE-1", "serial_number": "DMPGONE1", "enrollment_state": "retired",
                 "product_name": "iPad13,18", "enrolled_at": utcnow()}])
        db.migrate()
        with db.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT r.serial_number, r.state, r.unit_id, r.model, e.action FROM console_device_records r "
                "JOIN console_handover_events e ON e.record_id = r.id")).all()
        assert [tuple(r) for r in rows] == [("DMPADOPT1", "enrolled", None, "iPad13,18", "adopted")]
    finally:
        db.dispose()
