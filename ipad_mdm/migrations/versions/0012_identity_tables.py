"""mdm: the identity lifecycle's tables move from the profiles package to mdm

Revision ID: 0012_identity_tables
Revises: 0008_security
Create Date: 2026-12-02

crl_state, identity_renewals and certificate_checks were created by 0003_profiles while the
code using them lives in mdm; they are renamed into mdm's namespace (mdm_…) on mdm's branch.
"""
from alembic import op


revision = '0012_identity_tables'
down_revision = '0008_security'
branch_labels = None
depends_on = '0003_profiles'


def upgrade() -> None:
    with op.batch_alter_table('identity_renewals', schema=None) as batch_op:
        batch_op.drop_index('ix_identity_renewals_command_uuid')
        batch_op.drop_index('ix_identity_renewals_device_id')
    op.rename_table('crl_state', 'mdm_crl_state')
    op.rename_table('identity_renewals', 'mdm_identity_renewals')
    op.rename_table('certificate_checks', 'mdm_certificate_checks')
    with op.batch_alter_table('mdm_identity_renewals', schema=None) as batch_op:
        batch_op.create_index('ix_mdm_identity_renewals_command_uuid', ['command_uuid'], unique=False)
        batch_op.create_index('ix_mdm_identity_renewals_device_id', ['device_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mdm_identity_renewals', schema=None) as batch_op:
        batch_op.drop_index('ix_mdm_identity_renewals_device_id')
        batch_op.drop_index('ix_mdm_identity_renewals_command_uuid')
    op.rename_table('mdm_certificate_checks', 'certificate_checks')
    op.rename_table('mdm_identity_renewals', 'identity_renewals')
    op.rename_table('mdm_crl_state', 'crl_state')
    with op.batch_alter_table('identity_renewals', schema=None) as batch_op:
        batch_op.create_index('ix_identity_renewals_command_uuid', ['command_uuid'], unique=False)
        batch_op.create_index('ix_identity_renewals_device_id', ['device_id'], unique=False)
