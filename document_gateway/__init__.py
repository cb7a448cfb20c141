"""Document gateway: documents served only to compliant, certificate-authenticated iPads.

Public surface
  MANIFEST, register(app, hooks, instance)  mount /docs/ and the /api/v1 endpoints, subscribe to events
  service        create_leader, update_leader, assign_device, unassign_device, current_assignment,
                 store_document, set_classification, access_changed (recompute a device's access
                 state when the caller's transaction commits), refresh_access
  audit          the keyed, append-only decision log and its signed checkpoints
  policy         ROLE_CLEARANCE / OFFICE_WIDE_ROLES: the classification matrix
  i18n           texts(reason code) -> the reason and the fix, in Vietnamese and English
  models         Leader, DeviceAssignment, Document, GatewayAuditEvent, AuditCheckpoint,
                 LEADER_ROLES, CLASSIFICATIONS

How a request is decided: gate.py (on PostgreSQL an allowed read is answered by docs_fast.py, the
same functions on one plain connection). What is audited: models.GatewayAuditEvent.
The same decision for a reverse proxy in front of the office's own document system (nginx
auth_request, Envoy ext_authz, Traefik ForwardAuth): edge.py, /edge/decide, with classification
rules by URI or from the upstream's own header (edge_rules.py).

Each device's access state (leader, verdict, grace deadline, reasons) is precomputed in the same
transaction as every change that alters it: verdict changes (the verdict.changed /
verdict.updated hooks), leader and assignment changes (this package's service). What mdm changes
on its own (revocation, enrollment state, Lost Mode) is read live, in the same one indexed query.
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import audit, i18n, policy, service
from .models import (
    CLASSIFICATIONS,
    LEADER_ROLES,
    AuditCheckpoint,
    DeviceAssignment,
    Document,
    GatewayAuditEvent,
    Leader,
)

__all__ = ["MANIFEST", "register", "audit", "i18n", "policy", "service", "CLASSIFICATIONS", "LEADER_ROLES",
           "AuditCheckpoint", "DeviceAssignment", "Document", "GatewayAuditEvent", "Leader"]

MANIFEST = Manifest(name="document_gateway", register="document_gateway:register",
                    models=("document_gateway.models", "document_gateway.edge_models"), jobs=("document_gateway.jobs",),
                    cli=("document_gateway.cli:gateway",))


def register(app, hooks, instance) -> None:
    from . import api, edge_views, views
    from .storage import DocumentStore

    store = DocumentStore(instance.settings.instance_dir / "documents")
    app.extensions["document_gateway.store"] = store

    def recompute(session, device, **_):
        # Same session as the change: the access state commits atomically with the verdict.
        service.access_changed(session, device.id)

    from .access import describe

    hooks.subscribe("access.describe", describe, name="document_gateway.access")
    # critical: if the access state cannot be recomputed the change itself must not commit (fail
    # closed). Retirement and check-out need no entry: the enrollment state is read live.
    for event in ("verdict.changed", "verdict.updated"):
        hooks.subscribe(event, recompute, critical=True, name="document_gateway.access")
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(edge_views.bp)
    from .edge_fast import EdgeWSGI

    app.wsgi_app = EdgeWSGI(app.wsgi_app, instance)
