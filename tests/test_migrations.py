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
