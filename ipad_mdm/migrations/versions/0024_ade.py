"""automated device enrollment: ABM server tokens, synced devices, profiles

Revision ID: 0024_ade
Revises: 0001_core
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0024_ade'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ade_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('consumer_key', sa.String(length=128), nullable=False),
    sa.Column('credentials_enc', sa.Text(), nullable=False),
    sa.Column('access_token_expiry', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('server_name', sa.String(length=255), nullable=False),
    sa.Column('server_uuid', sa.String(length=64), nullable=False),
    sa.Column('org_name', sa.String(length=255), nullable=False),
    sa.Column('cursor', sa.Text(), nullable=True),
    sa.Column('fetched_all_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_sync_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('warned_days', sa.Integer(), nullable=True),
    sa.Column('profile_uuid', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('consumer_key')
    )
    op.create_table('ade_devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('serial_number', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.Column('color', sa.String(length=64), nullable=False),
    sa.Column('asset_tag', sa.String(length=128), nullable=False),
    sa.Column('os', sa.String(length=32), nullable=False),
    sa.Column('device_family', sa.String(length=32), nullable=False),
    sa.Column('profile_status', sa.String(length=32), nullable=False),
    sa.Column('profile_uuid', sa.String(length=64), nullable=True),
    sa.Column('op_type', sa.String(length=16), nullable=False),
    sa.Column('removed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('synced_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['ade_tokens.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('serial_number')
    )
    op.create_index(op.f('ix_ade_devices_token_id'), 'ade_devices', ['token_id'], unique=False)
    op.create_table('ade_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('profile_uuid', sa.String(length=64), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['ade_tokens.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_ade_profiles_token_id'), 'ade_profiles', ['token_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_ade_profiles_token_id'), table_name='ade_profiles')
    op.drop_table('ade_profiles')
    op.drop_index(op.f('ix_ade_devices_token_id'), table_name='ade_devices')
    op.drop_table('ade_devices')
    op.drop_table('ade_tokens')
