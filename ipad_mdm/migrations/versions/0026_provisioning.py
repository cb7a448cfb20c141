"""enrollment provisioning off the request path: when the current enrollment completed, and
whether what the other packages do for a new enrollment is still to run

Revision ID: 0026_provisioning
Revises: 0025_push_state
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0026_provisioning'
down_revision = '0025_push_state'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enrollment_completed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('provision_pending', sa.Boolean(), nullable=False, server_default=sa.text('false')))
        batch_op.create_index('ix_devices_provision_pending', ['id'], unique=False,
                              postgresql_where=sa.text('provision_pending'), sqlite_where=sa.text('provision_pending'))


def downgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_provision_pending', postgresql_where=sa.text('provision_pending'),
                            sqlite_where=sa.text('provision_pending'))
        batch_op.drop_column('provision_pending')
        batch_op.drop_column('enrollment_completed_at')
