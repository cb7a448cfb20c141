"""Document gateway (issue #5): documents served only to compliant, certificate-authenticated iPads.

Public surface
  register(app, hooks, instance)             mount /docs/ and the /api/v1 endpoints, subscribe to events
  service.create_leader(session, full_name, unit, role, title=..., active=...)
  service.assign_device(session, device, leader, by=...) / service.unassign_device(session, device, by=...)
  service.update_leader(session, leader, active=..., role=..., unit=...)
  service.store_document(...)                check type by content, verify PDF signatures, store
  service.bump_epoch(session, device_id)     invalidate cached gateway decisions (all processes)
  audit.verify_chain(session) -> (ok, first_bad_id, checked)
  cli.gateway                                click group: `gateway audit-verify`
  policy.ROLE_CLEARANCE / policy.OFFICE_WIDE_ROLES   the classification matrix

How a request is decided: gate.py. What is audited: models.GatewayAuditEvent.
"""
from __future__ import annotations

import logging

from sqlalchemy import event, select
from sqlalchemy.orm import Session, attributes

log = logging.getLogger("document_gateway")

# Attributes whose change alters a gateway decision, per model (see gate.py).
_WATCHED = {
    "IdentityCertificate": ("revoked_at", "device_id", "not_after"),
    "Device": ("enrollment_state", "lost_mode_enabled", "unit_id"),
    "Leader": ("active", "role", "unit_id"),
    "DeviceAssignment": ("returned_at", "leader_id", "device_id"),
    # compliance's verdict row: a second path besides the verdict.changed hook, because
    # Hooks.emit now logs and swallows a failing handler instead of failing the transaction.
    "DeviceVerdict": ("state", "grace_deadline"),
}
_listener_installed = False


def _changed(obj, names) -> bool:
    return any(attributes.get_history(obj, n).has_changes() for n in names)


def _after_flush(session: Session, flush_context) -> None:
    """Bump the epoch of every device whose decision inputs changed in this flush, whichever
    code path changed them (mdm revoking a certificate, Lost Mode, a future web console).
    Runs in the same transaction, so the bump commits or rolls back with the change."""
    from mdm.models import Device, IdentityCertificate

    from .gate import invalidate_everywhere_in_process
    from .models import DeviceAssignment, DeviceEpoch, Leader
    from .service import bump_epoch

    device_ids: set[int] = set()
    for obj in list(session.dirty) + list(session.deleted):
        name = type(obj).__name__
        if name not in _WATCHED or not _changed(obj, _WATCHED[name]):
            continue
        if isinstance(obj, IdentityCertificate) and obj.device_id is not None:
            device_ids.add(obj.device_id)
        elif isinstance(obj, Device):
            device_ids.add(obj.id)
        elif isinstance(obj, DeviceAssignment) or name == "DeviceVerdict":
            device_ids.add(obj.device_id)
        elif isinstance(obj, Leader):
            device_ids.update(session.connection().execute(
                select(DeviceAssignment.device_id).where(DeviceAssignment.leader_id == obj.id,
                                                         DeviceAssignment.returned_at.is_(None))).scalars())
    for obj in session.new:
        if isinstance(obj, DeviceAssignment) or type(obj).__name__ == "DeviceVerdict":
            device_ids.add(obj.device_id)
    if not device_ids:
        return
    if DeviceEpoch.__table__.name not in _tables_present(session):
        return
    for device_id in sorted(device_ids):
        bump_epoch(session, device_id)
        invalidate_everywhere_in_process(device_id)


_TABLES_CACHE: dict[int, set] = {}


def _tables_present(session: Session) -> set:
    # Other packages' tests may build a schema without this package's migration; skip then.
    bind = session.get_bind()
    key = str(bind.url)
    if key not in _TABLES_CACHE:
        from sqlalchemy import inspect

        try:
            _TABLES_CACHE[key] = set(inspect(session.connection()).get_table_names())
        except Exception:
            return set()
    return _TABLES_CACHE[key]


def install_listener() -> None:
    global _listener_installed
    if not _listener_installed:
        event.listen(Session, "after_flush", _after_flush)
        _listener_installed = True


def register(app, hooks, instance) -> None:
    from . import api, views
    from .gate import DecisionCache, cache_ttl, invalidate_everywhere_in_process
    from .service import bump_epoch
    from .storage import DocumentStore

    install_listener()
    store = DocumentStore(instance.settings.instance_dir / "documents")
    app.extensions["document_gateway.store"] = store
    app.extensions["document_gateway.cache"] = DecisionCache(cache_ttl(instance.settings))

    def invalidate(session, device, **_):
        # Same session as the change: the epoch commits atomically with the verdict/state.
        bump_epoch(session, device.id)
        invalidate_everywhere_in_process(device.id)

    hooks.subscribe("verdict.changed", invalidate)
    hooks.subscribe("device.retired", invalidate)
    hooks.subscribe("device.checked_out", invalidate)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
