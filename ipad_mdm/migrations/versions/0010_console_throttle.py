"""console: failed sign-ins for names without an account (lockout that reveals nothing)

Revision ID: 0010_console_throttle
Revises: 0007_console
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0010_console_throttle'
down_revision = '0007_console'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_login_throttle',
    sa.Column('name_sha256', sa.String(length=64), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', ipad_mdm.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name_sha256')
    )
    with op.batch_alter_table('console_login_throttle', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_login_throttle_updated_at'), ['updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('console_login_throttle', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_login_throttle_updated_at'))
    op.drop_table('console_login_throttle')
