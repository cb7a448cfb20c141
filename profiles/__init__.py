"""Configuration profiles: typed payloads, signing, versioned rollout, drift.

Also wires the device-identity lifecycle (mdm.certificates / mdm.crl_views)
into the app, since it shares this package's storage and hooks.
"""


def register(app, hooks, instance) -> None:
    from mdm import certificates, crl_views

    from . import api, service

    app.register_blueprint(api.bp)
    app.register_blueprint(crl_views.bp)

    settings = instance.settings

    def on_command_completed(session, device, command):
        service.on_command_completed(session, device, command)
        certificates.on_command_completed(session, device, command)

    def on_inventory_updated(session, device, kind):
        if kind == "ProfileList":
            service.reconcile(session, settings, device)
        elif kind == "CertificateList":
            certificates.check_certificates(session, instance.ca, device)

    def on_device_detail(session, device, detail):
        service.device_detail(session, device, detail)
        certificates.device_detail(session, settings, device, detail)

    hooks.subscribe("command.completed", on_command_completed)
    hooks.subscribe("inventory.updated", on_inventory_updated)
    hooks.subscribe("device.detail", on_device_detail)
    hooks.subscribe("identity.issued", certificates.on_identity_issued)
    hooks.subscribe("device.enrolled", lambda session, device: service.on_device_enrolled(session, instance, device))
    hooks.subscribe("device.checked_out", lambda session, device: service.on_device_gone(session, device))
    hooks.subscribe("device.retired", lambda session, device: service.on_device_gone(session, device))
