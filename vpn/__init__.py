"""Per-device VPN access (issue #3): WireGuard peers on the office gateway, IKEv2 as alternative.

Public surface (other packages use only this):
  register(app, hooks, instance)
  provision_peer(session, instance, device, *, kind=None, rekey=False, send_profile=True, requested_by="vpn", report=True)
  cut_peer(session, instance, device, reason, *, by="manual", requested_by=None)
  restore_peer(session, instance, device, reason, *, by="manual", requested_by=None, report=True)
  remove_peer(session, instance, device, reason, *, requested_by=None)
  peer_status(session, device) -> dict | None       (never contains private keys)
  event_counts(session, start, end) -> dict          (monthly report: "cut", "restored", ...)
  sync_server_config(instance, *, force_apply=False) (regenerate + apply; idempotent)
  register_applier(name, factory)                    (pluggable apply step)
  VpnError, NoPeer, WrongState, PoolExhausted, VpnConfigError
  providers, campaigns, inventory, sightings, gateways, labels (modules)  VPN providers as data, campaigns,
                                                     what each iPad has installed, tunnels seen (issue #19)
  compliance_facts(session, device_ids)              {device id: {"providers": {...}, "seen": {key: at}}}
  VpnInstallation, VpnTunnelSighting, VpnCampaign, VpnCampaignDevice, VpnProvider   (reports read them)

All operations run in the caller's session; the gateway config is regenerated
from the database only after that session commits.
"""
from __future__ import annotations

import logging

from .pool import PoolExhausted
from .serverconf import register_applier, sync_server_config
from .service import (
    CUT_VERDICTS,
    RESTORE_VERDICTS,
    NoPeer,
    VpnError,
    WrongState,
    cut_peer,
    cut_peers,
    event_counts,
    peer_status,
    provision_peer,
    remove_peer,
    restore_peer,
)
from .models import VpnCampaign, VpnCampaignDevice, VpnEvent, VpnInstallation, VpnProvider, VpnTunnelSighting
from .settings import VpnConfigError, vpn_settings
from . import campaigns, gateways, inventory, labels, providers, service, sightings

from ipad_mdm.manifest import Manifest  # noqa: E402

MANIFEST = Manifest(name="vpn", register="vpn:register", models=("vpn.models",), jobs=("vpn.jobs",),
                    cli=("vpn.cli:vpn",))

__all__ = [
    "MANIFEST", "VpnEvent", "VpnCampaign", "VpnCampaignDevice", "VpnInstallation", "VpnProvider", "VpnTunnelSighting",
    "campaigns", "gateways", "labels", "inventory", "providers", "sightings", "compliance_facts",
    "register", "provision_peer", "cut_peer", "restore_peer", "remove_peer", "peer_status", "event_counts",
    "sync_server_config", "register_applier", "VpnError", "NoPeer", "WrongState", "PoolExhausted", "VpnConfigError",
]

log = logging.getLogger(__name__)


def compliance_facts(session, device_ids):
    return inventory.facts(session, list(device_ids))


def register(app, hooks, instance) -> None:
    from . import api, api_campaigns

    vpn_settings(instance)  # a malformed VPN setting stops start-up with its name, not the first enrollment
    app.register_blueprint(api.bp)
    app.register_blueprint(api_campaigns.bp)

    def on_profile_list(session, device, kind, **_):
        inventory.update(session, instance.settings.org_identifier, device)

    hooks.subscribe("inventory.updated", on_profile_list, name="vpn.inventory",
                    when=lambda kind, **_: kind == "ProfileList")
    hooks.subscribe("command.completed", lambda session, device, command: campaigns.on_command_completed(
        session, instance, device, command), name="vpn.campaigns",
        when=lambda command, **_: command.request_type in ("InstallProfile", "RemoveProfile"))

    def on_enrolled(session, devices):
        # VPN trouble (pool exhausted, signing token unplugged) must not make MDM enrollment
        # fail: the hooks confine it to a SAVEPOINT (the provisioning pass retries a failed batch one
        # device at a time), and the device can be provisioned later.
        if vpn_settings(instance).auto_provision:
            service.provision_enrolled(session, instance, devices, requested_by="enrollment")

    def cuts(verdict) -> bool:
        # The policy decides: only verdicts whose actions include cut_vpn cut the peer.
        return getattr(verdict, "state", None) in CUT_VERDICTS and getattr(verdict, "cut_vpn", True)

    def cut_all(session, verdicts) -> list[dict]:
        """Cut the VPN access of [(device, verdict)] set-based (service.cut_peers): each one's outcome,
        with the kinds of access the cut reached (WireGuard peer removal, a certificate put on hold)."""
        reached = cut_peers(session, instance, [(device, f"compliance verdict {verdict.state}")
                                                for device, verdict in verdicts], by="compliance", requested_by="compliance")
        installed = inventory.installed_providers_of(session, list(reached))
        outcomes = []
        for device, _verdict in verdicts:
            kinds = reached[device.id]
            # A VPN on the iPad that nothing here can cut (an imported identity shared by every iPad, a
            # VPN installed by hand): said in the history, not passed over in silence.
            others = sorted(installed.get(device.id, set()) - set(kinds or ()))
            if kinds is None:  # nothing here to cut (cut_peer's NoPeer); the VPNs the iPad has are still named
                outcomes.append({"status": "not_applicable", "result": "no VPN access",
                                 **({"not_cut": others} if others else {})})
            else:
                outcomes.append({"status": "done", "result": "cut", "providers": kinds, "not_cut": others})
        return outcomes

    def on_verdict(session, device, previous, verdict):
        """The cut_vpn action of compliance: its outcome is written into the verdict transition
        (a failure propagates to the hooks, is recorded as failed and retried by compliance)."""
        if cuts(verdict):
            return cut_all(session, [(device, verdict)])[0]
        state = getattr(verdict, "state", None)
        if state in RESTORE_VERDICTS:
            try:
                status = restore_peer(session, instance, device, f"compliance verdict {state}", by="compliance",
                                      requested_by="compliance", report=False)
            except NoPeer:
                return {"status": "not_applicable", "result": "no VPN access"}
            return {"status": "done", "result": "restored", "providers": status["kinds"]}
        return {"status": "not_applicable"}

    def on_verdicts(session, items):
        """on_verdict for the transitions of a compliance pass (Hooks.emit_many): the cuts of all of
        them at once, a restore as on_verdict does it."""
        cut = [(it["device"], it["verdict"]) for it in items if cuts(it["verdict"])]
        outcomes = iter(cut_all(session, cut) if cut else ())
        return [next(outcomes) if cuts(it["verdict"]) else on_verdict(session, **it) for it in items]

    def on_gone(event):
        def handler(session, device):
            remove_peer(session, instance, device, f"device {event.split('.', 1)[1].replace('_', ' ')}",
                        requested_by=event)

        return handler

    def on_detail(session, device, detail):
        detail["vpn"] = peer_status(session, device)

    hooks.subscribe("devices.enrolled", on_enrolled, name="vpn.provision")
    def verdict_concerns_vpn(previous, verdict, **_):
        # Only a cut or a restore concerns the VPN (the others would answer "not applicable" after a
        # SAVEPOINT per device of a provisioning pass); a first verdict cannot restore a peer never cut.
        state = getattr(verdict, "state", None)
        return state in CUT_VERDICTS or (state in RESTORE_VERDICTS and previous is not None)

    hooks.subscribe("verdict.changed", on_verdict, name="cut_vpn", when=verdict_concerns_vpn, batch=on_verdicts)
    hooks.subscribe("device.retired", on_gone("device.retired"))
    hooks.subscribe("device.checked_out", on_gone("device.checked_out"))
    hooks.subscribe("device.detail", on_detail)

    # Bring the gateway file in line with the database at start-up (it may be
    # missing on a new host, or stale after a restore from backup); not for a CLI command.
    if not app.config.get("IPAD_MDM_SERVING", True):
        return
    try:
        sync_server_config(instance)
    except Exception:
        log.exception("initial VPN config regeneration failed; the reconcile job will retry")
