"""gateway: precomputed per-device access state replaces the decision-cache epochs

Revision ID: 0017_gateway_access
Revises: 0009_gateway_audit_keyed
Create Date: 2026-12-03 17:00:00
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0017_gateway_access'
down_revision = '0009_gateway_audit_keyed'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_device_access',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('leader_id', sa.Integer(), nullable=True),
    sa.Column('leader_name', sa.String(length=255), nullable=True),
    sa.Column('leader_title', sa.String(length=255), nullable=True),
    sa.Column('leader_role', sa.String(length=32), nullable=True),
    sa.Column('leader_unit_id', sa.Integer(), nullable=True),
    sa.Column('leader_active', sa.Boolean(), nullable=False),
    sa.Column('verdict_state', sa.String(length=16), nullable=True),
    sa.Column('grace_deadline', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('unassessed', sa.Boolean(), nullable=False),
    sa.Column('reasons_vi', sa.JSON(), nullable=False),
    sa.Column('reasons_en', sa.JSON(), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id')
    )
    # Rows appear as devices' verdicts, assignments and leaders change, and for any other device
    # on its first document request (gate.decide); the epochs of the old per-process cache go.
    op.drop_table('gateway_device_epochs')


def downgrade() -> None:
    op.create_table('gateway_device_epochs',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id')
    )
    op.drop_table('gateway_device_access')
