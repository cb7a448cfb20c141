"""reports: generated monthly / yearly report records

Revision ID: 0006_reports
Revises: 0001_core
Create Date: 2026-11-25

Only the reports package's table; other packages branch off 0001_core too and everything
is applied with `upgrade heads`.
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0006_reports'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reports_reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('lang', sa.String(length=8), nullable=False),
    sa.Column('formats', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('started_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'period', 'lang', name='uq_reports_kind_period_lang')
    )
    with op.batch_alter_table('reports_reports', schema=None) as batch_op:
        batch_op.create_index('ix_reports_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reports_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_reports_status')
    op.drop_table('reports_reports')
