"""gateway audit: keyed chain (chain_version), signed checkpoints, quarantine

Revision ID: 0009_gateway_audit_keyed
Revises: 0005_gateway
Create Date: 2026-12-02

Rows written before this revision keep chain_version 1 (plain SHA-256) and still verify;
every new row is keyed (HMAC-SHA256, version 2). Checkpoints are append-only like the log.
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0009_gateway_audit_keyed'
down_revision = '0005_gateway'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_audit_checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('head_hash', sa.String(length=64), nullable=False),
    sa.Column('at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('gateway_audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gateway_audit_checkpoints_seq'), ['seq'], unique=False)

    op.create_table('gateway_audit_quarantine',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('original_id', sa.Integer(), nullable=False),
    sa.Column('row', sa.JSON(), nullable=False),
    sa.Column('quarantined_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    # Plain ALTER TABLE ADD COLUMN (no batch copy): the append-only triggers stay in place.
    op.add_column('gateway_audit_events', sa.Column('chain_version', sa.Integer(), server_default='1', nullable=False))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER gateway_audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON gateway_audit_checkpoints "
            "FOR EACH ROW EXECUTE FUNCTION gateway_audit_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER gateway_audit_checkpoints_no_{verb.lower()} BEFORE {verb} ON gateway_audit_checkpoints "
                "BEGIN SELECT RAISE(ABORT, 'gateway_audit_checkpoints is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS gateway_audit_checkpoints_append_only ON gateway_audit_checkpoints")
    with op.batch_alter_table('gateway_audit_events', schema=None) as batch_op:
        batch_op.drop_column('chain_version')
    op.drop_table('gateway_audit_quarantine')
    with op.batch_alter_table('gateway_audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gateway_audit_checkpoints_seq'))
    op.drop_table('gateway_audit_checkpoints')
