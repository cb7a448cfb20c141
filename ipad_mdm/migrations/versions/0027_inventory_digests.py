"""the scheduled compliance run's cache of what the rules read of each device's inventory, by the
digest of the inventory it was reduced from

Revision ID: 0027_inventory_digests
Revises: 0026_provisioning
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0027_inventory_digests'
down_revision = '0026_provisioning'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('compliance_inventory_digests',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('reduced', sa.JSON(), nullable=False),
    sa.Column('written_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id')
    )


def downgrade() -> None:
    op.drop_table('compliance_inventory_digests')
