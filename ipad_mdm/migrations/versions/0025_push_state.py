"""push service state: APNs refusing the certificate, topic mismatch, expiry warnings

Revision ID: 0025_push_state
Revises: 0024_ade
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0025_push_state'
down_revision = '0024_ade'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('push_service_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=128), nullable=True),
    sa.Column('fingerprint', sa.String(length=64), nullable=True),
    sa.Column('since', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_failure_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('warned_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('warned_days', sa.Integer(), nullable=True),
    sa.Column('installed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('installed_by', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('push_service_state')
