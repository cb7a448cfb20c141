"""usb_tokens: the registry of signing USB tokens and their history

Revision ID: 0020_usb_tokens
Revises: 0017_gateway_access
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0020_usb_tokens'
down_revision = '0017_gateway_access'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('usb_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('serial_number', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('holder_leader_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('cert_subject', sa.String(length=1024), nullable=False),
    sa.Column('cert_holder_name', sa.String(length=255), nullable=False),
    sa.Column('cert_issuer', sa.String(length=1024), nullable=False),
    sa.Column('cert_issuer_name', sa.String(length=255), nullable=False),
    sa.Column('cert_serial', sa.String(length=64), nullable=False),
    sa.Column('cert_not_before', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cert_not_after', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cert_sha256', sa.String(length=64), nullable=False),
    sa.Column('cert_der', sa.LargeBinary(), nullable=True),
    sa.Column('cert_source', sa.String(length=16), nullable=False),
    sa.Column('expiry_warned', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lost_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['holder_leader_id'], ['gateway_leaders.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('serial_number')
    )
    with op.batch_alter_table('usb_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usb_tokens_holder_leader_id'), ['holder_leader_id'], unique=False)
        batch_op.create_index('ix_usb_tokens_state_not_after', ['state', 'cert_not_after'], unique=False)

    op.create_table('usb_token_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=24), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=False),
    sa.Column('leader_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('letter_year', sa.Integer(), nullable=True),
    sa.Column('letter_number', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['token_id'], ['usb_tokens.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('letter_year', 'letter_number', name='uq_usb_token_letter_register')
    )
    with op.batch_alter_table('usb_token_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usb_token_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_usb_token_events_token_id'), ['token_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('usb_token_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_usb_token_events_token_id'))
        batch_op.drop_index(batch_op.f('ix_usb_token_events_at'))

    op.drop_table('usb_token_events')
    with op.batch_alter_table('usb_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_usb_tokens_state_not_after')
        batch_op.drop_index(batch_op.f('ix_usb_tokens_holder_leader_id'))

    op.drop_table('usb_tokens')
