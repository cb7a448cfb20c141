"""vpn providers, installations, tunnel sightings, campaigns

Revision ID: 0021_vpn_providers
Revises: 0002_vpn
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0021_vpn_providers'
down_revision = '0002_vpn'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vpn_campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('target_key', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('verify_hours', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('vpn_gateways',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('interface', sa.String(length=15), nullable=False),
    sa.Column('key_enc', sa.Text(), nullable=False),
    sa.Column('desired_seq', sa.Integer(), nullable=False),
    sa.Column('applied_seq', sa.Integer(), nullable=False),
    sa.Column('applied_peers', sa.Integer(), nullable=True),
    sa.Column('applied_sha256', sa.String(length=64), nullable=True),
    sa.Column('applied_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_report_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('vpn_providers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('vpn_subtype', sa.String(length=155), nullable=False),
    sa.Column('vendor_config', sa.JSON(), nullable=False),
    sa.Column('secret_config_enc', sa.Text(), nullable=True),
    sa.Column('secret_keys', sa.JSON(), nullable=False),
    sa.Column('auth', sa.String(length=24), nullable=False),
    sa.Column('identity_enc', sa.Text(), nullable=True),
    sa.Column('identity_subject', sa.String(length=255), nullable=True),
    sa.Column('vpn_options', sa.JSON(), nullable=False),
    sa.Column('recognise', sa.JSON(), nullable=False),
    sa.Column('per_app_bundle_ids', sa.JSON(), nullable=False),
    sa.Column('verification', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_table('vpn_campaign_devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('source_profile', sa.String(length=255), nullable=True),
    sa.Column('command_uuid', sa.String(length=64), nullable=True),
    sa.Column('installed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('tunnel_seen_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['vpn_campaigns.id'], ),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'device_id')
    )
    with op.batch_alter_table('vpn_campaign_devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vpn_campaign_devices_command_uuid'), ['command_uuid'], unique=False)
        batch_op.create_index(batch_op.f('ix_vpn_campaign_devices_device_id'), ['device_id'], unique=False)
        batch_op.create_index('ix_vpn_campaign_devices_step', ['campaign_id', 'step'], unique=False)

    op.create_table('vpn_installations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('profile_identifier', sa.String(length=255), nullable=False),
    sa.Column('provider_key', sa.String(length=64), nullable=False),
    sa.Column('managed_by_us', sa.Boolean(), nullable=False),
    sa.Column('profile_uuid', sa.String(length=64), nullable=True),
    sa.Column('first_seen_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'profile_identifier')
    )
    with op.batch_alter_table('vpn_installations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vpn_installations_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_vpn_installations_provider_key'), ['provider_key'], unique=False)

    op.create_table('vpn_tunnel_sightings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('provider_key', sa.String(length=64), nullable=False),
    sa.Column('seen_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'provider_key')
    )
    with op.batch_alter_table('vpn_tunnel_sightings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vpn_tunnel_sightings_device_id'), ['device_id'], unique=False)

    with op.batch_alter_table('vpn_events', schema=None) as batch_op:
        batch_op.alter_column('kind', existing_type=sa.String(length=16), type_=sa.String(length=64),
                              existing_nullable=False)

    with op.batch_alter_table('vpn_certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_vpn_certificates_provider_key'), ['provider_key'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('vpn_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vpn_certificates_provider_key'))
        batch_op.drop_column('provider_key')

    with op.batch_alter_table('vpn_tunnel_sightings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vpn_tunnel_sightings_device_id'))

    op.drop_table('vpn_tunnel_sightings')
    op.drop_table('vpn_gateways')
    with op.batch_alter_table('vpn_installations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vpn_installations_provider_key'))
        batch_op.drop_index(batch_op.f('ix_vpn_installations_device_id'))

    op.drop_table('vpn_installations')
    with op.batch_alter_table('vpn_campaign_devices', schema=None) as batch_op:
        batch_op.drop_index('ix_vpn_campaign_devices_step')
        batch_op.drop_index(batch_op.f('ix_vpn_campaign_devices_device_id'))
        batch_op.drop_index(batch_op.f('ix_vpn_campaign_devices_command_uuid'))

    op.drop_table('vpn_campaign_devices')
    op.drop_table('vpn_providers')
    op.drop_table('vpn_campaigns')
