"""console: handover and return minutes numbered from a yearly register

Revision ID: 0019_console_minute_register
Revises: 0018_console_adopt
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0019_console_minute_register'
down_revision = '0018_console_adopt'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('console_handover_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('minute_year', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('minute_number', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_console_minute_register', ['minute_year', 'minute_number'])


def downgrade() -> None:
    with op.batch_alter_table('console_handover_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_console_minute_register', type_='unique')
        batch_op.drop_column('minute_number')
        batch_op.drop_column('minute_year')
