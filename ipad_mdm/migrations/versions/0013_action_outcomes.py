"""compliance: transitions whose actions failed are marked for retry

Revision ID: 0013_action_outcomes
Revises: 0011_baseline_policy
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0013_action_outcomes'
down_revision = '0011_baseline_policy'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('compliance_verdict_transitions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actions_pending', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.create_index(batch_op.f('ix_compliance_verdict_transitions_actions_pending'), ['actions_pending'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('compliance_verdict_transitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_compliance_verdict_transitions_actions_pending'))
        batch_op.drop_column('actions_pending')
