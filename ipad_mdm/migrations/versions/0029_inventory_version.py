"""devices.inventory_version: on PostgreSQL a new number from a sequence whenever a statement writes
one of the inventory columns the compliance rules read (trigger), so the scheduled run knows an
inventory it has reduced without hashing kilobytes of JSON per device and run (compliance.digests);
0 and unmaintained on SQLite. Kept reductions from before (keyed by SHA-256) no longer match: every
inventory is read once more.

Revision ID: 0029_inventory_version
Revises: 0028_idle_notify
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0029_inventory_version'
down_revision = '0028_idle_notify'
branch_labels = None
depends_on = '0015_declarative'  # devices.ddm_status


def upgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inventory_version', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    if op.get_bind().dialect.name != "postgresql":
        return
    # The statements metadata.create_all runs too (mdm.models): one definition of the trigger.
    from mdm.models import INVENTORY_VERSION_DDL

    for statement in INVENTORY_VERSION_DDL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS devices_inventory_version ON devices")
        op.execute("DROP FUNCTION IF EXISTS ipad_mdm_inventory_written()")
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('inventory_version')
