"""Apple MDM protocol server: enrollment, SCEP identity, check-in, commands, pushes, and the
device-identity lifecycle (mdm.identity).

Public surface (every other package uses only these names):
  models      Device, Command, CommandEvent, CheckinEvent, EnrollmentToken, IdentityCertificate
  modules     protocol (pure message parsing/building), commands (the per-device queue),
              service (admin operations shared by the API, the CLI and the console)
  identity    DeviceAuthError, UntrustedProxy, presented_certificate, trusted_identity  (who is this
              device: the one owner of that decision), revoke_identity, REVOCATION_REASONS
  scope       device_for_request, caller_unit_id, in_scope  (the unit-scope rule of the API)
  errors      ProtocolError, CommandRefused, NotFound
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import commands, protocol, service
from .checkin import DeviceAuthError, UntrustedProxy, presented_certificate, trusted_identity
from .commands import CommandRefused
from .identity import REVOCATION_REASONS, RevocationError, revoke_identity
from .models import CheckinEvent, Command, CommandEvent, Device, EnrollmentToken, IdentityCertificate
from .protocol import DESTRUCTIVE_COMMANDS, ProtocolError
from .scope import caller_unit_id, device_for_request, in_scope
from .service import NotFound

__all__ = [
    "MANIFEST", "register", "commands", "protocol", "service",
    "CheckinEvent", "Command", "CommandEvent", "Device", "EnrollmentToken", "IdentityCertificate",
    "DeviceAuthError", "UntrustedProxy", "presented_certificate", "trusted_identity",
    "REVOCATION_REASONS", "RevocationError", "revoke_identity",
    "DESTRUCTIVE_COMMANDS", "ProtocolError", "CommandRefused", "NotFound",
    "caller_unit_id", "device_for_request", "in_scope",
]

MANIFEST = Manifest(
    name="mdm",
    register="mdm:register",
    models=("mdm.models", "mdm.identity.models"),
    jobs=("mdm.jobs", "mdm.push", "mdm.identity.jobs"),
    cli=("mdm.cli:enroll_token", "mdm.cli:device", "mdm.cli:command"),
)


def register(app, hooks, instance) -> None:
    from . import api, identity, scep_views, views

    app.register_blueprint(views.bp)
    app.register_blueprint(scep_views.bp)
    app.register_blueprint(api.bp)
    identity.register(app, hooks, instance)
