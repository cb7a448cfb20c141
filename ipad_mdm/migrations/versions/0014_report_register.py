"""reports: provisional reports, the yearly register of report numbers, frozen month figures

Revision ID: 0014_report_register
Revises: 0006_reports
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0014_report_register'
down_revision = '0006_reports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reports_reports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provisional', sa.Boolean(), server_default=sa.text('false'), nullable=False))
        batch_op.add_column(sa.Column('until', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('number', sa.Integer(), nullable=True))
    op.create_table('reports_register',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('issued_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('year', 'number', name='uq_reports_register_number'),
    sa.UniqueConstraint('kind', 'period', name='uq_reports_register_report')
    )
    op.create_table('reports_month_figures',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('kpis', sa.JSON(), nullable=False),
    sa.Column('risks', sa.JSON(), nullable=False),
    sa.Column('computed_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('month')
    )


def downgrade() -> None:
    op.drop_table('reports_month_figures')
    op.drop_table('reports_register')
    with op.batch_alter_table('reports_reports', schema=None) as batch_op:
        batch_op.drop_column('number')
        batch_op.drop_column('until')
        batch_op.drop_column('provisional')
