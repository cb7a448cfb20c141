"""The device-identity lifecycle: revocation and the CRL, CertificateList checks, renewal.

Public surface (re-exported by mdm): revoke_identity, RevocationError, REVOCATION_REASONS,
current_crl, check_certificates, start_renewal, renew_expiring, RenewalInFlight.
"""
from __future__ import annotations

from .checks import check_certificates
from .revocation import REVOCATION_REASONS, RevocationError, current_crl, revoke_identity
from .renewal import RenewalInFlight, renew_expiring, start_renewal

__all__ = ["REVOCATION_REASONS", "RevocationError", "RenewalInFlight", "check_certificates", "current_crl",
           "renew_expiring", "revoke_identity", "start_renewal", "register"]


def register(app, hooks, instance) -> None:
    """The identity lifecycle's routes and event subscriptions (called by mdm.register)."""
    from . import renewal, views

    app.register_blueprint(views.bp)
    settings = instance.settings

    def on_inventory_updated(session, device, kind, **_):
        if kind == "CertificateList":
            check_certificates(session, instance.ca, device)

    hooks.subscribe("command.completed", renewal.on_command_completed,
                    when=lambda command, **_: command.request_type == "InstallProfile")
    hooks.subscribe("inventory.updated", on_inventory_updated, when=lambda kind, **_: kind == "CertificateList")
    hooks.subscribe("device.detail", lambda session, device, detail: renewal.device_detail(session, settings, device,
                                                                                              detail))
    # critical: a renewed identity is not issued without its binding to the device (and the SCEP
    # request needs no SAVEPOINT around one lookup).
    hooks.subscribe("identity.issued", renewal.on_identity_issued, critical=True)
