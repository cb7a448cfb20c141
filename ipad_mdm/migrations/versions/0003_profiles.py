"""profiles: versioned configuration profiles, rollout, drift; identity lifecycle (CRL, renewals, checks)

Revision ID: 0003_profiles
Revises: 0001_core
Create Date: 2026-11-27

Only this package's tables: it is one of several branches off 0001_core,
applied together with `alembic upgrade heads`.
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0003_profiles'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('configuration_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identifier', sa.String(length=255), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('identifier')
    )
    op.create_table('crl_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=True),
    sa.Column('der', sa.LargeBinary(), nullable=True),
    sa.Column('this_update', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_update', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('profile_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('profile_uuid', sa.String(length=36), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('organization', sa.String(length=255), nullable=False),
    sa.Column('removal_disallowed', sa.Boolean(), nullable=False),
    sa.Column('payloads', sa.JSON(), nullable=False),
    sa.Column('plist_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['profile_id'], ['configuration_profiles.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('profile_id', 'version', name='uq_profile_versions_profile_version'),
    sa.UniqueConstraint('profile_uuid')
    )
    with op.batch_alter_table('profile_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profile_versions_profile_id'), ['profile_id'], unique=False)

    op.create_table('certificate_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('checked_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('findings', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id')
    )
    op.create_table('profile_assignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('target_type', sa.String(length=16), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.ForeignKeyConstraint(['profile_id'], ['configuration_profiles.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('profile_assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profile_assignments_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profile_assignments_profile_id'), ['profile_id'], unique=False)

    op.create_table('profile_drift',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('identifier', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('expected_uuid', sa.String(length=64), nullable=True),
    sa.Column('reported_uuid', sa.String(length=64), nullable=True),
    sa.Column('is_enrollment_profile', sa.Boolean(), nullable=False),
    sa.Column('detected_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('profile_drift', schema=None) as batch_op:
        batch_op.create_index('ix_profile_drift_device_open', ['device_id', 'resolved_at'], unique=False)

    op.create_table('profile_installations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('command_uuid', sa.String(length=64), nullable=True),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('installed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('removed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.ForeignKeyConstraint(['profile_id'], ['configuration_profiles.id'], ),
    sa.ForeignKeyConstraint(['version_id'], ['profile_versions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'profile_id', name='uq_profile_installations_device_profile')
    )
    with op.batch_alter_table('profile_installations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profile_installations_command_uuid'), ['command_uuid'], unique=False)
        batch_op.create_index(batch_op.f('ix_profile_installations_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_profile_installations_profile_id'), ['profile_id'], unique=False)

    op.create_table('identity_renewals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('old_identity_id', sa.Integer(), nullable=False),
    sa.Column('enrollment_token_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('command_uuid', sa.String(length=64), nullable=True),
    sa.Column('new_identity_id', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.ForeignKeyConstraint(['enrollment_token_id'], ['enrollment_tokens.id'], ),
    sa.ForeignKeyConstraint(['new_identity_id'], ['identity_certificates.id'], ),
    sa.ForeignKeyConstraint(['old_identity_id'], ['identity_certificates.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('enrollment_token_id')
    )
    with op.batch_alter_table('identity_renewals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identity_renewals_command_uuid'), ['command_uuid'], unique=False)
        batch_op.create_index(batch_op.f('ix_identity_renewals_device_id'), ['device_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('identity_renewals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identity_renewals_device_id'))
        batch_op.drop_index(batch_op.f('ix_identity_renewals_command_uuid'))

    op.drop_table('identity_renewals')
    with op.batch_alter_table('profile_installations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profile_installations_profile_id'))
        batch_op.drop_index(batch_op.f('ix_profile_installations_device_id'))
        batch_op.drop_index(batch_op.f('ix_profile_installations_command_uuid'))

    op.drop_table('profile_installations')
    with op.batch_alter_table('profile_drift', schema=None) as batch_op:
        batch_op.drop_index('ix_profile_drift_device_open')

    op.drop_table('profile_drift')
    with op.batch_alter_table('profile_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profile_assignments_profile_id'))
        batch_op.drop_index(batch_op.f('ix_profile_assignments_device_id'))

    op.drop_table('profile_assignments')
    op.drop_table('certificate_checks')
    with op.batch_alter_table('profile_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profile_versions_profile_id'))

    op.drop_table('profile_versions')
    op.drop_table('crl_state')
    op.drop_table('configuration_profiles')
