"""console: every enrolled iPad is in the handover workflow (records of no unit; adoption backfill)

Revision ID: 0018_console_adopt
Revises: 0010_console_throttle
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
from ipad_mdm.db import UTCDateTime, utcnow


revision = '0018_console_adopt'
down_revision = '0010_console_throttle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('console_device_records', schema=None) as batch_op:
        batch_op.alter_column('unit_id', existing_type=sa.Integer(), nullable=True)
    # iPads enrolled before this revision with CLI/API tokens: adopted as "enrolled".
    devices = sa.table('devices', sa.column('id'), sa.column('udid'), sa.column('serial_number'), sa.column('unit_id'),
                       sa.column('product_name'), sa.column('enrollment_state'))
    records = sa.table('console_device_records', sa.column('id'), sa.column('device_id'), sa.column('state'))
    bind = op.get_bind()
    orphans = bind.execute(sa.select(devices.c.id, devices.c.udid, devices.c.serial_number, devices.c.unit_id,
                                     devices.c.product_name)
                           .where(devices.c.enrollment_state.in_(('authenticated', 'enrolled')))
                           .where(~sa.exists().where(records.c.device_id == devices.c.id))
                           .order_by(devices.c.id)).all()
    at = utcnow()
    rec_t = sa.table('console_device_records', sa.column('id', sa.Integer), sa.column('serial_number', sa.String),
                     sa.column('model', sa.String), sa.column('unit_id', sa.Integer), sa.column('state', sa.String),
                     sa.column('device_id', sa.Integer), sa.column('note', sa.Text),
                     sa.column('created_at', UTCDateTime()), sa.column('created_by', sa.String),
                     sa.column('updated_at', UTCDateTime()))
    ev_t = sa.table('console_handover_events', sa.column('record_id', sa.Integer), sa.column('action', sa.String),
                    sa.column('from_state', sa.String), sa.column('to_state', sa.String), sa.column('at', UTCDateTime()),
                    sa.column('by', sa.String), sa.column('note', sa.Text))
    for d in orphans:
        rid = bind.execute(sa.insert(rec_t).values(
            serial_number=(d.serial_number or '').strip().upper().replace(' ', ''), model=d.product_name or '',
            unit_id=d.unit_id, state='enrolled', device_id=d.id, note='', created_at=at, created_by='migration',
            updated_at=at).returning(rec_t.c.id)).scalar_one()
        bind.execute(sa.insert(ev_t).values(record_id=rid, action='adopted', from_state=None, to_state='enrolled',
                                            at=at, by='migration', note=f'UDID {d.udid}'))


def downgrade() -> None:
    # Adopted records may have no unit; they cannot go back under a NOT NULL column.
    op.execute("DELETE FROM console_handover_events WHERE record_id IN "
               "(SELECT id FROM console_device_records WHERE unit_id IS NULL)")
    op.execute("DELETE FROM console_device_records WHERE unit_id IS NULL")
    with op.batch_alter_table('console_device_records', schema=None) as batch_op:
        batch_op.alter_column('unit_id', existing_type=sa.Integer(), nullable=False)
