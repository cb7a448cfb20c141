"""`ipad-mdm vpn …`: look at and act on the per-device VPN peers."""
from __future__ import annotations

import json
import sys

import click

from ipad_mdm.cli_support import open_instance_for


def _emit(data):
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@click.group()
def vpn():
    """Per-device WireGuard / IKEv2 peers."""


@vpn.command("list")
@click.option("--state", type=click.Choice(["active", "cut", "removed"]), default=None)
@click.option("--limit", default=1000, type=int)
@click.pass_context
def list_cmd(ctx, state, limit):
    from .service import list_peers

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        total, rows = list_peers(s, state=state, limit=limit)
    _emit({"total": total, "peers": rows})


def _device(s, udid):
    from mdm import service

    try:
        return service.get_device(s, udid)
    except service.NotFound as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@vpn.command("show")
@click.argument("udid")
@click.pass_context
def show(ctx, udid):
    from . import peer_status

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        _emit(peer_status(s, _device(s, udid)))


def _act(ctx, udid, action, reason):
    from . import VpnError, cut_peer, provision_peer, restore_peer

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            device = _device(s, udid)
            if action == "provision":
                provision_peer(s, inst, device, requested_by="cli")
            elif action == "cut":
                cut_peer(s, inst, device, reason, by="manual", requested_by="cli")
            else:
                restore_peer(s, inst, device, reason, by="manual", requested_by="cli")
    except VpnError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{action}: {udid}")


@vpn.command("provision")
@click.argument("udid")
@click.pass_context
def provision(ctx, udid):
    """Create (or re-key) the device's peer and queue its VPN profile."""
    _act(ctx, udid, "provision", None)


@vpn.command("cut")
@click.argument("udid")
@click.option("--reason", required=True)
@click.pass_context
def cut(ctx, udid, reason):
    _act(ctx, udid, "cut", reason)


@vpn.command("restore")
@click.argument("udid")
@click.option("--reason", required=True)
@click.pass_context
def restore(ctx, udid, reason):
    _act(ctx, udid, "restore", reason)


@vpn.command("sync")
@click.option("--force", is_flag=True, help="apply even when the file did not change")
@click.pass_context
def sync(ctx, force):
    """Rewrite the server config from the database and apply it."""
    from . import sync_server_config

    result = sync_server_config(open_instance_for(ctx), force_apply=force)
    _emit({"path": str(result.path), "active_peers": result.active_peers, "changed": result.changed,
           "applied": result.applied, "method": result.method, "ok": result.ok, "detail": result.detail})
    if not result.ok:
        sys.exit(1)


# ------------------------------------------------------------------ providers, tunnels, campaigns (issue #19)

def _fail(message: str, code: int = 2):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@vpn.group("provider")
def provider():
    """VPN providers as data: OpenVPN from an .ovpn, or any VPN app."""


@provider.command("add")
@click.argument("key")
@click.option("--name", required=True)
@click.option("--ovpn", "ovpn_file", type=click.File("r", encoding="utf-8"), help="an OpenVPN client .ovpn")
@click.option("--app", "vpn_subtype", help="a VPN app's bundle identifier (VPNSubType)")
@click.option("--vendor-config", "vendor_file", type=click.File("r", encoding="utf-8"),
              help="a JSON object of the app's VendorConfig keys")
@click.option("--secret-key", "secret_keys", multiple=True, help="a VendorConfig key to keep encrypted (repeatable)")
@click.option("--auth", type=click.Choice(["device_certificate", "imported_identity"]), required=True)
@click.option("--identity-p12", type=click.File("rb"), help="an imported identity (PKCS#12)")
@click.option("--identity-password-env", help="name of the variable holding the PKCS#12 password")
@click.option("--recognise", multiple=True, help="profile identifier pattern of this VPN already on iPads")
@click.option("--openvpn-status", help="the OpenVPN server's status file: tunnels are seen there")
@click.option("--on-demand/--no-on-demand", default=None)
@click.pass_context
def provider_add(ctx, key, name, ovpn_file, vpn_subtype, vendor_file, secret_keys, auth, identity_p12,
                 identity_password_env, recognise, openvpn_status, on_demand):
    """Define a VPN provider (nothing secret is printed back)."""
    import base64
    import os

    from . import providers

    if bool(ovpn_file) == bool(vpn_subtype):
        _fail("give either --ovpn (OpenVPN Connect) or --app BUNDLE_ID (another VPN app)")
    body: dict = {"key": key, "name": name, "auth": auth, "recognise": list(recognise),
                  "kind": "openvpn" if ovpn_file else "vpn_app"}
    if ovpn_file:
        body["ovpn"] = ovpn_file.read()
    else:
        body["vpn_subtype"] = vpn_subtype
        try:
            body["vendor_config"] = json.load(vendor_file) if vendor_file else {}
        except ValueError:
            _fail("--vendor-config is not a JSON object")
        body["secret_keys"] = list(secret_keys)
    if identity_p12:
        body["identity_p12"] = base64.b64encode(identity_p12.read()).decode()
        body["identity_password"] = os.environ.get(identity_password_env or "", "")
    if openvpn_status:
        body["verification"] = {"kind": "openvpn_status", "path": openvpn_status}
    if on_demand is not None:
        body["on_demand"] = {"enabled": on_demand}
    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            row = providers.define(s, inst, body, by="cli")
            out = providers.describe(row)
    except providers.ProviderError as exc:
        _fail(str(exc))
    _emit(out)


@provider.command("list")
@click.pass_context
def provider_list(ctx):
    from . import providers

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        _emit(providers.list_all(s))


@vpn.command("tunnels")
@click.option("--wg-dump", type=click.File("r"), help="`wg show <iface> dump` output of a gateway ('-': stdin)")
@click.option("--openvpn-status", type=click.File("r"), help="an OpenVPN server's status file")
@click.option("--provider", "provider_key", help="the provider whose server wrote --openvpn-status")
@click.pass_context
def tunnels(ctx, wg_dump, openvpn_status, provider_key):
    """Record which tunnels a gateway has seen (without options: every source this host can read)."""
    from . import sightings

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            if wg_dump is None and openvpn_status is None:
                out = sightings.read_all(s, inst)
            else:
                out = {}
                if wg_dump is not None:
                    out["wireguard"] = sightings.record_wireguard(s, sightings.parse_wg_dump(wg_dump.read()))
                if openvpn_status is not None:
                    if not provider_key:
                        _fail("--openvpn-status needs --provider KEY")
                    out[provider_key] = sightings.record_common_names(
                        s, provider_key, sightings.parse_openvpn_status(openvpn_status.read()))
    except sightings.DumpError as exc:
        _fail(str(exc))
    _emit({"recorded": out})


@vpn.group("campaign")
def campaign():
    """Migration campaigns from one VPN provider to another."""


@campaign.command("create")
@click.option("--name", required=True)
@click.option("--from", "source", required=True)
@click.option("--to", "target", required=True)
@click.option("--verify-hours", default=24, type=int)
@click.pass_context
def campaign_create(ctx, name, source, target, verify_hours):
    from . import campaigns

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            row = campaigns.create(s, {"name": name, "source": source, "target": target,
                                       "verify_hours": verify_hours}, by="cli")
            campaigns.advance(s, inst, row)
            out = campaigns.progress(s, row)
    except campaigns.CampaignError as exc:
        _fail(str(exc))
    _emit(out)


@campaign.command("status")
@click.argument("campaign_id", type=int)
@click.pass_context
def campaign_status(ctx, campaign_id):
    from . import campaigns
    from .models import VpnCampaign

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        row = s.get(VpnCampaign, campaign_id) if 0 < campaign_id < 2**31 else None
        if row is None:
            _fail(f"unknown campaign {campaign_id}", 1)
        _emit(campaigns.progress(s, row))


@campaign.command("act")
@click.argument("campaign_id", type=int)
@click.argument("action", type=click.Choice(["pause", "resume", "widen", "rollback", "advance"]))
@click.pass_context
def campaign_act(ctx, campaign_id, action):
    from . import campaigns
    from .models import VpnCampaign

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            row = s.get(VpnCampaign, campaign_id) if 0 < campaign_id < 2**31 else None
            if row is None:
                _fail(f"unknown campaign {campaign_id}", 1)
            if action in ("pause", "resume"):
                campaigns.set_paused(row, action == "pause")
            elif action == "widen":
                campaigns.widen(row)
                campaigns.advance(s, inst, row)
            elif action == "rollback":
                campaigns.roll_back(s, inst, row)
            else:
                campaigns.advance(s, inst, row)
            out = campaigns.progress(s, row)
    except campaigns.CampaignError as exc:
        _fail(str(exc))
    _emit(out)


@vpn.group("gateway")
def gateway():
    """VPN gateways on their own hosts, each fed by `ipad-mdm vpn agent`."""


@gateway.command("add")
@click.argument("name")
@click.option("--interface", default="wg0")
@click.option("--key-file", type=click.Path(dir_okay=False), required=True,
              help="where to write the gateway's key (0600); copy it to the gateway host, nowhere else")
@click.pass_context
def gateway_add(ctx, name, interface, key_file):
    from pathlib import Path

    from ipad_mdm.files import write_atomic

    from . import gateways

    path = Path(key_file)
    if path.exists():
        _fail(f"{path} exists; choose a new file for the gateway key")
    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            row, key = gateways.add(s, inst, name, interface)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(path, key + b"\n", mode=0o600)
            out = gateways.describe(row)
    except gateways.GatewayError as exc:
        _fail(str(exc))
    _emit({**out, "key_file": str(path)})


@gateway.command("list")
@click.pass_context
def gateway_list(ctx):
    """Each gateway's last applied state, as its agent reported it."""
    from . import gateways

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        _emit(gateways.list_all(s))


@vpn.command("agent")
@click.option("--gateway", "name", required=True)
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--state-dir", type=click.Path(file_okay=False), required=True)
@click.option("--interface", default="wg0")
@click.option("--apply", "apply_mode", type=click.Choice(["file", "syncconf"]), default="syncconf",
              help="syncconf: also change the live interface with wg; file: keep the peer file only")
@click.option("--interface-config", type=click.Path(exists=True, dir_okay=False),
              help="the gateway's own [Interface] section (its private key stays on this host)")
@click.option("--wg-bin", default="wg")
@click.option("--report-every", default=60, type=int)
def agent_cmd(name, key_file, state_dir, interface, apply_mode, interface_config, wg_bin, report_every):
    """Run the gateway agent: apply peer changes from this gateway's queue, report back (no database needed)."""
    from pathlib import Path

    from .agent import run

    run(name, Path(key_file), Path(state_dir), interface=interface, apply=apply_mode, wg_bin=wg_bin,
        interface_config=Path(interface_config) if interface_config else None, report_every=report_every)
