"""Automated Device Enrollment: supervised iPads straight out of the box, through Apple Business Manager.

Public surface
  MANIFEST, register(app, hooks, instance)   /mdm/ade/enroll, /api/v1/ade/…, hook subscriptions
  client         DepClient (Apple's device-enrollment API), AppleError, CursorError
  service        add_token, sync, define_profile, assign, expiry_warnings, known_serial
  models         AdeToken, AdeDevice, AdeProfile

The flow: ABM holds the server's public key (token.keypair) → the server token (.p7m) →
sync the iPads ABM assigned here (they appear in the console's handover workflow as registered)
→ an enrollment profile at Apple pointing at /mdm/ade/enroll → on first boot the iPad sends its
signed machine information (enroll.py) and gets the enrollment profile → it enrolls (SCEP,
check-in) and waits in Setup Assistant until what its unit requires is installed
(configure.py), then DeviceConfigured.
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import client, service
from .token import keypair
from .models import AdeDevice, AdeProfile, AdeToken

__all__ = ["MANIFEST", "register", "client", "service", "keypair", "AdeDevice", "AdeProfile", "AdeToken"]

MANIFEST = Manifest(name="ade", register="ade:register", models=("ade.models",), jobs=("ade.jobs",),
                    cli=("ade.cli:ade",))


def register(app, hooks, instance) -> None:
    from . import configure, views

    # Only an iPad held in Setup Assistant concerns this package: the others cost no query (or SAVEPOINT).
    hooks.subscribe("devices.enrolled", configure.on_enrolled, name="ade.await_configuration",
                    when=lambda devices, **_: any(d.awaiting_configuration for d in devices))
    hooks.subscribe("command.completed", configure.on_command_completed, name="ade.await_configuration",
                    when=configure.concerns)
    app.register_blueprint(views.bp)
