"""`ipad-mdm declaration …`: declarations as data from the command line (the same service as
the API): list, show, create, update, assign, unassign, delete, device, sync."""
from __future__ import annotations

import json

import click

from ipad_mdm.cli_support import emit, fail, open_instance_for


@click.group()
def declaration():
    """Declarative management: declarations, assignments, device states."""


def _load(path_or_json: str) -> dict:
    try:
        if path_or_json.lstrip().startswith("{"):
            data = json.loads(path_or_json)
        else:
            with open(path_or_json, encoding="utf-8") as fh:
                data = json.load(fh)
    except (OSError, ValueError) as exc:
        fail(f"cannot read JSON from {path_or_json[:80]!r}: {exc}", 2)
    if not isinstance(data, dict):
        fail("the JSON must be an object", 2)
    return data


def _run(ctx, fn, *, sync_reach=None, force: bool = False):
    """Run `fn(session)` in one transaction, then tell the reached DDM devices to sync."""
    from . import service, sync
    from .catalog import DeclarationError

    inst = open_instance_for(ctx)
    push = []
    try:
        with inst.database.session() as s:
            result, reach = fn(s)
            if reach is not False:
                from .osupdate import schedule_updates

                push = sync.request_sync(s, sync.devices_for(s, reach), sync.renderer_for(inst),
                                         requested_by="cli", force=force)
                push = sorted(set(push) | set(schedule_updates(s)))
    except DeclarationError as exc:
        fail(exc.message, 2)
    except service.NotFound as exc:
        fail(str(exc))
    except service.Conflict as exc:
        fail(str(exc), 2)
    if push:
        rt = ctx.find_root().obj["runtime"](inst, dispatch=True)
        rt.dispatcher.request_push(push)
        if hasattr(rt.dispatcher, "wait_idle"):
            rt.dispatcher.wait_idle(timeout=30)
        rt.close()
    if isinstance(result, dict):
        result["devices_synced"] = len(push)
    return result


@declaration.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx, as_json):
    from . import service
    from .api import declaration_dict

    data = _run(ctx, lambda s: ([declaration_dict(d) for d in service.list_all(s)], False))
    if as_json:
        emit(data, True)
    else:
        for d in data:
            click.echo(f"{d['identifier']}\t{d['kind']}\t{d['type']}\tv{d['version']}\t{len(d['assignments'])} assignment(s)")


@declaration.command("show")
@click.argument("identifier")
@click.pass_context
def show_cmd(ctx, identifier):
    from . import service
    from .api import declaration_dict

    emit(_run(ctx, lambda s: (declaration_dict(service.get(s, identifier), full=True), False)), True)


@declaration.command("create")
@click.argument("spec", metavar="FILE_OR_JSON")
@click.pass_context
def create_cmd(ctx, spec):
    """Create from {"identifier", "type", "display_name", "payload", ["source"], ["description"]}."""
    from . import service
    from .api import declaration_dict

    body = _load(spec)

    def fn(s):
        decl = service.create(s, identifier=body.get("identifier"), type=body.get("type"),
                              display_name=body.get("display_name"), payload=body.get("payload"),
                              source=body.get("source"), description=body.get("description"), created_by="cli")
        return declaration_dict(decl, full=True), False

    emit(_run(ctx, fn), True)


@declaration.command("update")
@click.argument("identifier")
@click.argument("spec", metavar="FILE_OR_JSON")
@click.pass_context
def update_cmd(ctx, identifier, spec):
    """A new version from {"payload", ["source"], ["display_name"], ["description"]}."""
    from . import service
    from .api import declaration_dict

    body = _load(spec)

    def fn(s):
        decl = service.get(s, identifier)
        service.new_version(s, decl, payload=body.get("payload"), source=body.get("source"),
                            display_name=body.get("display_name"), description=body.get("description"),
                            created_by="cli")
        return declaration_dict(decl, full=True), None

    emit(_run(ctx, fn), True)


def _targets(devices, units, all_devices):
    return dict(devices=list(devices), units=list(units), all_devices=all_devices)


@declaration.command("assign")
@click.argument("identifier")
@click.option("--device", "devices", multiple=True, help="UDID, repeatable")
@click.option("--unit", "units", multiple=True, help="unit code, repeatable")
@click.option("--all", "all_devices", is_flag=True, help="every iPad")
@click.option("--predicate", default=None, help="activation predicate (configurations)")
@click.pass_context
def assign_cmd(ctx, identifier, devices, units, all_devices, predicate):
    from . import service
    from .api import declaration_dict

    def fn(s):
        decl = service.get(s, identifier)
        service.assign(s, decl, predicate=predicate, created_by="cli", **_targets(devices, units, all_devices))
        return declaration_dict(decl), service.assigned_device_ids(s, decl)

    emit(_run(ctx, fn), True)


@declaration.command("unassign")
@click.argument("identifier")
@click.option("--device", "devices", multiple=True)
@click.option("--unit", "units", multiple=True)
@click.option("--all", "all_devices", is_flag=True)
@click.pass_context
def unassign_cmd(ctx, identifier, devices, units, all_devices):
    from . import service
    from .api import declaration_dict

    def fn(s):
        decl = service.get(s, identifier)
        reach = service.assigned_device_ids(s, decl)
        service.unassign(s, decl, **_targets(devices, units, all_devices))
        return declaration_dict(decl), reach

    emit(_run(ctx, fn), True)


@declaration.command("delete")
@click.argument("identifier")
@click.pass_context
def delete_cmd(ctx, identifier):
    from . import service

    def fn(s):
        decl = service.get(s, identifier)
        reach = service.assigned_device_ids(s, decl)
        service.delete(s, decl)
        return {"deleted": identifier}, reach

    emit(_run(ctx, fn), True)


@declaration.command("device")
@click.argument("udid")
@click.pass_context
def device_cmd(ctx, udid):
    """What one iPad reports: its declarations (valid, active, reasons) and status items."""
    from sqlalchemy import select

    from mdm import Device

    from . import service, status

    def fn(s):
        device = s.scalar(select(Device).where(Device.udid == udid))
        if device is None:
            raise service.NotFound(f"unknown device {udid}")
        return status.device_summary(s, device), False

    emit(_run(ctx, fn), True)


@declaration.command("sync")
@click.argument("udid")
@click.pass_context
def sync_cmd(ctx, udid):
    """Make one iPad fetch its declarations now (DeclarativeManagement command)."""
    from sqlalchemy import select

    from mdm import Device

    from . import service

    def fn(s):
        device = s.scalar(select(Device).where(Device.udid == udid))
        if device is None:
            raise service.NotFound(f"unknown device {udid}")
        if device.ddm_enabled_at is None:
            raise service.Conflict("this iPad does not use declarative management (MDM-command path)")
        return {"udid": udid}, [device.id]

    emit(_run(ctx, fn, force=True), True)


@declaration.command("os-updates")
@click.pass_context
def os_updates_cmd(ctx):
    """Enforced iPadOS updates: each iPad at the target, updating, or failed (and why)."""
    from . import osupdate

    emit(_run(ctx, lambda s: (osupdate.progress(s), False)), True)
