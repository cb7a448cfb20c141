"""gateway edge: classification rules for the reverse-proxy decision, audit of the original request

Revision ID: 0022_gateway_edge
Revises: 0020_usb_tokens
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import ipad_mdm.db


revision = '0022_gateway_edge'
down_revision = '0020_usb_tokens'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_edge_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pattern_kind', sa.String(length=8), nullable=False),
    sa.Column('pattern', sa.String(length=1024), nullable=False),
    sa.Column('methods', sa.String(length=64), nullable=False),
    sa.Column('classification', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_gateway_edge_rules_position'), 'gateway_edge_rules', ['position'], unique=False)
    op.create_table('gateway_edge_ruleset',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('default_classification', sa.String(length=16), nullable=False),
    sa.Column('probe_base_url', sa.String(length=1024), nullable=False),
    sa.Column('probe_header', sa.String(length=64), nullable=False),
    sa.Column('probe_ttl_seconds', sa.Integer(), nullable=False),
    sa.Column('updated_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('gateway_edge_labels',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('classification', sa.String(length=16), nullable=False),
    sa.Column('fetched_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', ipad_mdm.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_index(op.f('ix_gateway_edge_labels_expires_at'), 'gateway_edge_labels', ['expires_at'], unique=False)
    op.execute("INSERT INTO gateway_edge_ruleset (id, version, default_classification, probe_base_url, probe_header, "
               "probe_ttl_seconds, updated_at) VALUES (1, 1, 'internal', '', 'X-Document-Classification', 300, "
               "CURRENT_TIMESTAMP)")
    # Plain ALTER TABLE ADD COLUMN (no batch copy): the append-only triggers stay in place.
    op.add_column('gateway_audit_events', sa.Column('request_method', sa.String(length=16), nullable=True))
    op.add_column('gateway_audit_events', sa.Column('request_uri', sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gateway_audit_events') as batch_op:
        batch_op.drop_column('request_uri')
        batch_op.drop_column('request_method')
    op.drop_index(op.f('ix_gateway_edge_labels_expires_at'), table_name='gateway_edge_labels')
    op.drop_table('gateway_edge_labels')
    op.drop_table('gateway_edge_ruleset')
    op.drop_index(op.f('ix_gateway_edge_rules_position'), table_name='gateway_edge_rules')
    op.drop_table('gateway_edge_rules')
