"""Apple MDM protocol server: enrollment, SCEP identity, check-in, commands, pushes, and the
device-identity lifecycle (mdm.identity).

Public surface (every other package uses only these names):
  models      Device, Command, CommandEvent, CheckinEvent, EnrollmentToken, IdentityCertificate
  modules     protocol (pure message parsing/building), commands (the per-device queue),
              service (admin operations shared by the API, the CLI and the console),
              ddm (declarative transport: endpoints, status reports, sync tokens; pure)
  declarative serve_declarations(app, provider): the feature that answers tokens, declaration-items
              and declaration/… ; status reports are stored here (Device.ddm_status,
              StatusReportRecord) and announced with the `status.reported` hook
  identity    DeviceAuthError, UntrustedProxy, presented_certificate, trusted_identity  (who is this
              device: the one owner of that decision; judge_identity applies the same rule to an
              identity row a caller read itself), device_of_request (the same for a device's
              GET of asset data), revoke_identity, REVOCATION_REASONS
  scope       device_for_request, caller_unit_id, in_scope  (the unit-scope rule of the API)
  pushcert    the APNs push certificate in service: status, current, install_and_wake (topic guard),
              PushCertificateRefused, TopicChangeRefused
  errors      ProtocolError, CommandRefused, NotFound
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import commands, ddm, protocol, pushcert, service
from .checkin import (DeviceAuthError, UntrustedProxy, device_of_request, judge_identity, presented_certificate,
                      proxy_secret_ok,
                      trusted_identity)
from .commands import CommandRefused
from .identity import REVOCATION_REASONS, RevocationError, revoke_identity
from .models import (CheckinEvent, Command, CommandEvent, Device, EnrollmentToken, IdentityCertificate,
                     StatusReportRecord)
from .protocol import DESTRUCTIVE_COMMANDS, ProtocolError
from .scope import caller_unit_id, device_for_request, in_scope
from .service import NotFound
from .envelope import decrypt_envelope
from .enrollment import EnrollmentRefused

__all__ = [
    "MANIFEST", "register", "serve_declarations", "commands", "ddm", "protocol", "pushcert", "service",
    "CheckinEvent", "Command", "CommandEvent", "Device", "EnrollmentToken", "IdentityCertificate",
    "StatusReportRecord",
    "DeviceAuthError", "UntrustedProxy", "device_of_request", "presented_certificate", "trusted_identity",
    "proxy_secret_ok",
    "judge_identity",
    "REVOCATION_REASONS", "RevocationError", "revoke_identity",
    "DESTRUCTIVE_COMMANDS", "ProtocolError", "CommandRefused", "NotFound",
    "caller_unit_id", "device_for_request", "in_scope", "decrypt_envelope", "EnrollmentRefused",
]

MANIFEST = Manifest(
    name="mdm",
    register="mdm:register",
    models=("mdm.models", "mdm.identity.models", "mdm.pushcert.models"),
    jobs=("mdm.jobs", "mdm.push", "mdm.provisioning", "mdm.identity.jobs", "mdm.pushcert.jobs"),
    cli=("mdm.cli:enroll_token", "mdm.cli:device", "mdm.cli:command", "mdm.pushcert.cli:push_cert"),
)


def serve_declarations(app, provider) -> None:
    """provider(session, device, endpoint: ddm.Endpoint) -> JSON-able dict; raises
    ddm.UnknownDeclaration for a declaration not in the device's set."""
    from .views import DECLARATIONS

    app.extensions[DECLARATIONS] = provider


def register(app, hooks, instance) -> None:
    from . import api, identity, scep_views, views
    from .pushcert import api as pushcert_api

    from .connect_wsgi import IdleConnectWSGI

    app.register_blueprint(pushcert_api.bp)
    app.register_blueprint(views.bp)
    app.wsgi_app = IdleConnectWSGI(app.wsgi_app, instance,
                                   wake=lambda ids: app.extensions["ipad_mdm.dispatcher"].request_push(ids))
    app.register_blueprint(scep_views.bp)
    app.register_blueprint(api.bp)
    identity.register(app, hooks, instance)
