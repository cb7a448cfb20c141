"""Declarative device management: declarations as data, each device's declaration set, the
status channel's declaration states, and the facts compliance reads from them.

mdm carries the protocol (the DeclarativeManagement check-in, status reports, the command);
this package decides what each device's set is and answers the device's requests for it.

Public surface
  MANIFEST, register(app, hooks, instance)
  service                create, new_version, assign, unassign, delete, get, list_all
  catalog                the declaration types and their keys (TYPES, validate_payload)
  sync                   device_set, request_sync, sync_after_change, uses_ddm, STATUS_SUBSCRIPTIONS,
                         add_contributor (configurations another package makes per device, e.g. app.managed),
                         renderer_for(instance)
  compliance_facts(session, devices) -> {device_id: DeclarativeFacts(enforcement, failed)}
  device_summary(session, device)    -> the declarative part of a device's detail
  describe_all(reasons, lang)        Apple's status reason codes in Vietnamese / English
  DeclarationError, NotFound, Conflict
  models                 Declaration, DeclarationVersion, DeclarationAssignment, DeclarationState
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import catalog, reasons, service, sync
from .catalog import DeclarationError
from .models import Declaration, DeclarationAssignment, DeclarationState, DeclarationVersion
from .reasons import describe_all
from .service import Conflict, NotFound
from .status import DeclarativeFacts, Enforcement, compliance_facts, device_summary

__all__ = ["MANIFEST", "register", "catalog", "reasons", "service", "sync", "compliance_facts", "device_summary",
           "DeclarativeFacts", "Enforcement", "DeclarationError", "NotFound", "Conflict", "Declaration",
           "DeclarationAssignment", "DeclarationState", "DeclarationVersion", "renderer_of", "describe_all"]

MANIFEST = Manifest(name="declarative", register="declarative:register", models=("declarative.models",),
                    jobs=("declarative.jobs",), cli=("declarative.cli:declaration",))


def renderer_of(app):
    return app.extensions["declarative.renderer"]


def register(app, hooks, instance) -> None:
    import mdm
    from ipad_mdm.dispatch import push_after_commit

    from . import api, osupdate, status, views

    renderer = sync.renderer_for(instance)
    app.extensions["declarative.renderer"] = renderer
    mdm.serve_declarations(app, lambda session, device, endpoint: sync.answer(session, device, endpoint, renderer))
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)

    def on_enrolled(session, devices):
        push = [d.id for d in devices if sync.turn_on(session, d, instance.settings)]
        if push:
            push_after_commit(session, push)

    def on_detail(session, device, detail):
        detail["declarative"] = status.device_summary(session, device)

    def on_enrolled_osupdate(session, devices):
        # An iPad on declarative management gets its OS updates declared: ScheduleOSUpdate is not for it.
        push = osupdate.schedule_updates(session, [d for d in devices if not sync.uses_ddm(d, None)])
        if push:
            push_after_commit(session, push)

    hooks.subscribe("devices.enrolled", on_enrolled, name="declarative.enable")
    hooks.subscribe("devices.enrolled", on_enrolled_osupdate, name="declarative.osupdate",
                    when=lambda devices, **_: any(not sync.uses_ddm(d, None) for d in devices))
    hooks.subscribe("command.completed", osupdate.on_command_completed, name="declarative.osupdate",
                    when=lambda command, **_: command.request_type == "ScheduleOSUpdate")
    hooks.subscribe("status.reported", status.on_status_reported, name="declarative.states")
    hooks.subscribe("device.detail", on_detail, name="declarative.detail")
