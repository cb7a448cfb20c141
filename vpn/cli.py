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
