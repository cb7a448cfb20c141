"""Document gateway: documents served only to compliant, certificate-authenticated iPads.

Public surface
  MANIFEST, register(app, hooks, instance)  mount /docs/ and the /api/v1 endpoints, subscribe to events
  service        create_leader, update_leader, assign_device, unassign_device, current_assignment,
                 store_document, set_classification, bump_epoch (invalidate cached decisions everywhere)
  audit          the keyed, append-only decision log and its signed checkpoints
  policy         ROLE_CLEARANCE / OFFICE_WIDE_ROLES: the classification matrix
  models         Leader, DeviceAssignment, Document, GatewayAuditEvent, AuditCheckpoint,
                 LEADER_ROLES, CLASSIFICATIONS

How a request is decided: gate.py. What is audited: models.GatewayAuditEvent.

Cached decisions are invalidated through a per-device epoch bumped in the same transaction as
every change that alters them: verdict changes (the verdict.changed / verdict.updated hooks),
retirement and check-out (hooks), leader and assignment changes (this package's service).
What mdm changes on its own (revocation, enrollment state, Lost Mode) is read live on every
request by the one indexed query in gate.py.
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import audit, policy, service
from .models import (
    CLASSIFICATIONS,
    LEADER_ROLES,
    AuditCheckpoint,
    DeviceAssignment,
    Document,
    GatewayAuditEvent,
    Leader,
)

__all__ = ["MANIFEST", "register", "audit", "policy", "service", "CLASSIFICATIONS", "LEADER_ROLES",
           "AuditCheckpoint", "DeviceAssignment", "Document", "GatewayAuditEvent", "Leader"]

MANIFEST = Manifest(name="document_gateway", register="document_gateway:register",
                    models=("document_gateway.models",), jobs=("document_gateway.jobs",),
                    cli=("document_gateway.cli:gateway",))


def register(app, hooks, instance) -> None:
    from . import api, views
    from .gate import DecisionCache, cache_ttl, invalidate_everywhere_in_process
    from .storage import DocumentStore

    store = DocumentStore(instance.settings.instance_dir / "documents")
    app.extensions["document_gateway.store"] = store
    app.extensions["document_gateway.cache"] = DecisionCache(cache_ttl(instance.settings))

    def invalidate(session, device, **_):
        # Same session as the change: the epoch commits atomically with the verdict/state.
        service.bump_epoch(session, device.id)
        invalidate_everywhere_in_process(device.id)

    from .access import describe

    hooks.subscribe("access.describe", describe, name="document_gateway.access")
    # critical: if the epoch cannot be bumped the change itself must not commit (fail closed).
    for event in ("verdict.changed", "verdict.updated", "device.retired", "device.checked_out"):
        hooks.subscribe(event, invalidate, critical=True)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
