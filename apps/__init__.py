"""The office's apps (issue #16, first part): the catalog (App Store and in-house apps), releases
that go to the pilot units first and to every unit after the acceptance (nghiệm thu) is recorded,
pause and roll back, delivery with InstallApplication and progress per unit and per iPad.

Public surface
  MANIFEST, register(app, hooks, instance)
  service      create_app, add_inhouse_release, add_store_release, accept, set_paused, withdraw,
               wanted_release, accepted_version, get_app, get_release, AppError
  delivery     reconcile_device, reconcile_all, progress, render (managed configuration variables)
  ipa          read_ipa, IpaError (what an .ipa says about itself; its provisioning profile verified)
  models       App, AppRelease, AppDeployment
  accepted_versions(session) -> {bundle id: the accepted release's version}  (compliance reads it)
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import delivery, service
from .models import App, AppDeployment, AppRelease

__all__ = ["MANIFEST", "register", "accepted_versions", "delivery", "service", "App", "AppDeployment", "AppRelease"]

MANIFEST = Manifest(name="apps", register="apps:register", models=("apps.models",), jobs=("apps.jobs",),
                    cli=("apps.cli:app",))


def register(app, hooks, instance) -> None:
    from ipad_mdm.dispatch import push_after_commit

    from . import api, delivery, views

    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)

    def on_enrolled(session, devices):
        apps = delivery.all_apps(session)  # once for the provisioning pass
        if not apps:
            return
        push = [d.id for d in devices if delivery.reconcile_device(session, instance, d, apps, requested_by="enrollment")]
        if push:
            push_after_commit(session, push)

    hooks.subscribe("devices.enrolled", on_enrolled, name="apps.deliver")
    hooks.subscribe("command.completed", delivery.on_command_completed, name="apps.progress",
                    when=lambda command, **_: command.request_type in ("InstallApplication", "ManagedApplicationList"))
    hooks.subscribe("inventory.updated", delivery.on_inventory, name="apps.installed",
                    when=lambda kind, **_: kind == "InstalledApplicationList")
    hooks.subscribe("status.reported", delivery.on_status, name="apps.installed")


def _contribute(session, device, instance):
    from . import delivery

    return delivery.declarations_for(session, device, instance)


# Registered on import (not in register): the CLI and the workers compute declaration sets too.
def _add_contributor() -> None:
    from declarative import sync

    sync.add_contributor(_contribute)


_add_contributor()


def accepted_versions(session) -> dict[str, str]:
    from sqlalchemy import select

    from .models import App
    from .service import accepted_version

    out = {}
    for a in session.scalars(select(App)):
        v = accepted_version(a)
        if v:
            out[a.bundle_id] = v
    return out
