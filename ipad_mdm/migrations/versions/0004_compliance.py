"""compliance: policies, policy versions, device verdicts, verdict transitions

Revision ID: 0004_compliance
Revises: 0001_core
Create Date: 2026-11-25

Only the compliance package's tables; other packages branch off 0001_core too
and everything is applied with `upgrade heads`.
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0004_compliance'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('compliance_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('rules', sa.JSON(), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=False),
    sa.Column('grace_hours', sa.Integer(), nullable=False),
    sa.Column('escalation_hours', sa.Integer(), nullable=True),
    sa.Column('assign_all', sa.Boolean(), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=False),
    sa.Column('deleted_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('compliance_policy_units',
    sa.Column('policy_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['policy_id'], ['compliance_policies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], ),
    sa.PrimaryKeyConstraint('policy_id', 'unit_id')
    )
    with op.batch_alter_table('compliance_policy_units', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_compliance_policy_units_unit_id'), ['unit_id'], unique=False)

    op.create_table('compliance_policy_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('rules', sa.JSON(), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=False),
    sa.Column('grace_hours', sa.Integer(), nullable=False),
    sa.Column('escalation_hours', sa.Integer(), nullable=True),
    sa.Column('assign_all', sa.Boolean(), nullable=False),
    sa.Column('unit_ids', sa.JSON(), nullable=False),
    sa.Column('change', sa.String(length=32), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['policy_id'], ['compliance_policies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('policy_id', 'version', name='uq_compliance_policy_versions_policy_version')
    )
    with op.batch_alter_table('compliance_policy_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_compliance_policy_versions_policy_id'), ['policy_id'], unique=False)

    op.create_table('compliance_device_verdicts',
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('since', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('evaluated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('failing_since', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('grace_deadline', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('non_compliant_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('escalation_deadline', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('inventory_since', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failing_rules', sa.JSON(), nullable=False),
    sa.Column('reasons_vi', sa.JSON(), nullable=False),
    sa.Column('reasons_en', sa.JSON(), nullable=False),
    sa.Column('policy_versions', sa.JSON(), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id')
    )
    with op.batch_alter_table('compliance_device_verdicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_compliance_device_verdicts_state'), ['state'], unique=False)

    op.create_table('compliance_verdict_transitions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('udid', sa.String(length=64), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('trigger', sa.String(length=64), nullable=False),
    sa.Column('grace_deadline', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('escalation_deadline', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('policy_versions', sa.JSON(), nullable=False),
    sa.Column('failing_rules', sa.JSON(), nullable=False),
    sa.Column('reasons_vi', sa.JSON(), nullable=False),
    sa.Column('reasons_en', sa.JSON(), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=False),
    # No cascade: the audit history must outlive an accidental device delete.
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('compliance_verdict_transitions', schema=None) as batch_op:
        batch_op.create_index('ix_compliance_transitions_device_at', ['device_id', 'at'], unique=False)
        batch_op.create_index('ix_compliance_transitions_to_state_at', ['to_state', 'at'], unique=False)
        batch_op.create_index('ix_compliance_transitions_unit_at', ['unit_id', 'at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('compliance_verdict_transitions', schema=None) as batch_op:
        batch_op.drop_index('ix_compliance_transitions_unit_at')
        batch_op.drop_index('ix_compliance_transitions_to_state_at')
        batch_op.drop_index('ix_compliance_transitions_device_at')

    op.drop_table('compliance_verdict_transitions')
    with op.batch_alter_table('compliance_device_verdicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_compliance_device_verdicts_state'))

    op.drop_table('compliance_device_verdicts')
    with op.batch_alter_table('compliance_policy_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_compliance_policy_versions_policy_id'))

    op.drop_table('compliance_policy_versions')
    with op.batch_alter_table('compliance_policy_units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_compliance_policy_units_unit_id'))

    op.drop_table('compliance_policy_units')
    op.drop_table('compliance_policies')
