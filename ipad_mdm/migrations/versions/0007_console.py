"""web console: users, handover records and their history

Revision ID: 0007_console
Revises: 0001_core
Create Date: 2026-11-25

Only the console package's tables. It branches off 0001_core like the other packages and depends on
0005_gateway because users (leader accounts) and handover records point at gateway_leaders.
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0007_console'
down_revision = '0001_core'
branch_labels = None
depends_on = '0005_gateway'


def upgrade() -> None:
    op.create_table('console_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('full_name', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('leader_id', sa.Integer(), nullable=True),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('totp_secret_enc', sa.LargeBinary(), nullable=True),
    sa.Column('totp_enabled', sa.Boolean(), nullable=False),
    sa.Column('totp_last_step', sa.Integer(), nullable=True),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('session_version', sa.Integer(), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('last_login_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('password_changed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['leader_id'], ['gateway_leaders.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    with op.batch_alter_table('console_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_users_leader_id'), ['leader_id'], unique=False)

    op.create_table('console_device_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('serial_number', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('enrollment_token_id', sa.Integer(), nullable=True),
    sa.Column('enrollment_url_enc', sa.LargeBinary(), nullable=True),
    sa.Column('leader_id', sa.Integer(), nullable=True),
    sa.Column('erase_command_uuid', sa.String(length=64), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.ForeignKeyConstraint(['enrollment_token_id'], ['enrollment_tokens.id'], ),
    sa.ForeignKeyConstraint(['leader_id'], ['gateway_leaders.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('console_device_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_device_records_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_device_records_leader_id'), ['leader_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_device_records_serial_number'), ['serial_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_device_records_unit_id'), ['unit_id'], unique=False)
        batch_op.create_index('ix_console_records_state_unit', ['state', 'unit_id'], unique=False)

    op.create_table('console_handover_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('from_state', sa.String(length=24), nullable=True),
    sa.Column('to_state', sa.String(length=24), nullable=False),
    sa.Column('at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['record_id'], ['console_device_records.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('console_handover_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_handover_events_record_id'), ['record_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('console_handover_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_handover_events_record_id'))
    op.drop_table('console_handover_events')
    with op.batch_alter_table('console_device_records', schema=None) as batch_op:
        batch_op.drop_index('ix_console_records_state_unit')
        batch_op.drop_index(batch_op.f('ix_console_device_records_unit_id'))
        batch_op.drop_index(batch_op.f('ix_console_device_records_serial_number'))
        batch_op.drop_index(batch_op.f('ix_console_device_records_leader_id'))
        batch_op.drop_index(batch_op.f('ix_console_device_records_device_id'))
    op.drop_table('console_device_records')
    with op.batch_alter_table('console_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_users_leader_id'))
    op.drop_table('console_users')
