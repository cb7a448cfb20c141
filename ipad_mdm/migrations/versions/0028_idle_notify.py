"""PostgreSQL tells every process when what the idle probe decided about a device may have
changed (mdm.quiet): NOTIFY ipad_mdm_idle, 'c<device id>' for a command queued for it, 'd<device
id>' for its identity revoked or moved, its current identity or enrollment state changed, or it
deleted, '*' when one of these tables is truncated. Nothing on SQLite (one process, no NOTIFY).

Revision ID: 0028_idle_notify
Revises: 0027_inventory_digests (and 0008_security, which adds devices.current_identity_id)
Create Date: 2026-12-06
"""
from alembic import op


revision = '0028_idle_notify'
down_revision = '0027_inventory_digests'
branch_labels = None
depends_on = '0008_security'

_TRIGGERS = [
    # A command queued (or set back to queued / notnow): the device has something waiting. Other
    # status changes only take work away; 'sent' always follows 'queued'.
    ("commands", "commands_idle_notify", "INSERT OR UPDATE OF status",
     "NEW.status IN ('queued', 'notnow')", "c"),
    ("identity_certificates", "identity_idle_notify", "UPDATE OF revoked_at, device_id",
     "OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.device_id IS DISTINCT FROM NEW.device_id", "d"),
    ("identity_certificates", "identity_idle_notify_delete", "DELETE", None, "d"),
    ("devices", "devices_idle_notify", "UPDATE OF current_identity_id, enrollment_state",
     "OLD.current_identity_id IS DISTINCT FROM NEW.current_identity_id"
     " OR OLD.enrollment_state IS DISTINCT FROM NEW.enrollment_state", "d"),
    ("devices", "devices_idle_notify_delete", "DELETE", None, "d"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # TG_ARGV[0]: the payload's kind. The device is the row's id on devices, its device_id elsewhere;
    # OLD first, so a moved identity tells the device it belonged to.
    op.execute("""
CREATE FUNCTION ipad_mdm_idle_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  device bigint;
BEGIN
  IF TG_TABLE_NAME = 'devices' THEN
    device := COALESCE(OLD.id, NEW.id);
  ELSE
    device := COALESCE(OLD.device_id, NEW.device_id);
  END IF;
  IF device IS NOT NULL THEN
    PERFORM pg_notify('ipad_mdm_idle', TG_ARGV[0] || device::text);
  END IF;
  RETURN NULL;
END $$""")
    op.execute("""
CREATE FUNCTION ipad_mdm_idle_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('ipad_mdm_idle', '*');
  RETURN NULL;
END $$""")
    for table, name, events, when, kind in _TRIGGERS:
        condition = f" WHEN ({when})" if when else ""
        op.execute(f"CREATE TRIGGER {name} AFTER {events} ON {table} FOR EACH ROW{condition} "
                   f"EXECUTE FUNCTION ipad_mdm_idle_changed('{kind}')")
    for table in ("commands", "identity_certificates", "devices"):
        op.execute(f"CREATE TRIGGER {table}_idle_notify_truncate AFTER TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION ipad_mdm_idle_all()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name, *_ in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for table in ("commands", "identity_certificates", "devices"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_idle_notify_truncate ON {table}")
    op.execute("DROP FUNCTION IF EXISTS ipad_mdm_idle_changed()")
    op.execute("DROP FUNCTION IF EXISTS ipad_mdm_idle_all()")
