"""vpn tables: WireGuard peers, IKEv2 certificates, VPN events, applies

Revision ID: 0002_vpn
Revises: 0001_core
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0002_vpn'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vpn_wireguard_peers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('public_key', sa.String(length=44), nullable=False),
    sa.Column('private_key_enc', sa.Text(), nullable=True),
    sa.Column('preshared_key_enc', sa.Text(), nullable=True),
    sa.Column('address_v4', sa.String(length=15), nullable=True),
    sa.Column('address_v6', sa.String(length=39), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('cut_by', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cut_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('restored_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('removed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('profile_command_uuid', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('address_v4'),
    sa.UniqueConstraint('address_v6'),
    sa.UniqueConstraint('device_id'),
    sa.UniqueConstraint('public_key')
    )
    op.create_index('ix_vpn_wireguard_peers_state', 'vpn_wireguard_peers', ['state'], unique=False)
    op.create_table('vpn_certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('sha256_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('local_identifier', sa.String(length=255), nullable=False),
    sa.Column('not_after', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('cut_by', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('issued_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cut_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('restored_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('removed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('profile_command_uuid', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('serial'),
    sa.UniqueConstraint('sha256_fingerprint')
    )
    op.create_index(op.f('ix_vpn_certificates_device_id'), 'vpn_certificates', ['device_id'], unique=False)
    op.create_table('vpn_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('by', sa.String(length=128), nullable=True),
    sa.Column('address', sa.String(length=45), nullable=True),
    sa.Column('at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_vpn_events_device_id'), 'vpn_events', ['device_id'], unique=False)
    op.create_index('ix_vpn_events_event_at', 'vpn_events', ['event', 'at'], unique=False)
    op.create_table('vpn_applies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('config_sha256', sa.String(length=64), nullable=False),
    sa.Column('active_peers', sa.Integer(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_vpn_applies_at'), 'vpn_applies', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_vpn_applies_at'), table_name='vpn_applies')
    op.drop_table('vpn_applies')
    op.drop_index('ix_vpn_events_event_at', table_name='vpn_events')
    op.drop_index(op.f('ix_vpn_events_device_id'), table_name='vpn_events')
    op.drop_table('vpn_events')
    op.drop_index(op.f('ix_vpn_certificates_device_id'), table_name='vpn_certificates')
    op.drop_table('vpn_certificates')
    op.drop_index('ix_vpn_wireguard_peers_state', table_name='vpn_wireguard_peers')
    op.drop_table('vpn_wireguard_peers')
