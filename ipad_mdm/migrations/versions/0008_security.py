"""security events; re-enrollment tokens; the identity a device currently uses

Revision ID: 0008_security
Revises: 0001_core
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0008_security'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('security_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=48), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('udid', sa.String(length=64), nullable=True),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('summary_vi', sa.Text(), nullable=False),
    sa.Column('summary_en', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('source_ip', sa.String(length=64), nullable=True),
    sa.Column('acknowledged_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=128), nullable=True),
    sa.Column('acknowledgement_note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('security_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_security_events_at'), ['at'], unique=False)
        batch_op.create_index('ix_security_events_kind_at', ['kind', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_security_events_udid'), ['udid'], unique=False)

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('current_identity_id', sa.Integer(), nullable=True))

    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reenroll_device_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_enrollment_tokens_reenroll_device_id'), ['reenroll_device_id'], unique=False)

    # Each device's newest unrevoked identity is the one it signs with today.
    op.execute(
        "UPDATE devices SET current_identity_id = (SELECT max(c.id) FROM identity_certificates c "
        "WHERE c.device_id = devices.id AND c.revoked_at IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrollment_tokens_reenroll_device_id'))
        batch_op.drop_column('reenroll_device_id')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('current_identity_id')
    with op.batch_alter_table('security_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_security_events_udid'))
        batch_op.drop_index('ix_security_events_kind_at')
        batch_op.drop_index(batch_op.f('ix_security_events_at'))
    op.drop_table('security_events')
