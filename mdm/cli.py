"""`ipad-mdm enroll-token | device | command …`: mdm's part of the command line (the contract's
CLI names: enroll-token create, device list / show / re-enroll, command send / show)."""
from __future__ import annotations

import json
import logging

import click

from ipad_mdm.cli_support import emit, fail, open_instance_for

log = logging.getLogger("mdm.cli")


def runtime_of(ctx, inst, *, dispatch: bool):
    """Hooks and dispatcher come from the composition root (every package's subscribers)."""
    return ctx.find_root().obj["runtime"](inst, dispatch=dispatch)


@click.group("enroll-token")
def enroll_token():
    """One-time enrollment tokens."""


@enroll_token.command("create")
@click.option("--serial", default=None, help="Bind the token to one device serial number")
@click.option("--unit", default=None, help="Organisational unit code")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def enroll_token_create(ctx, serial, unit, as_json):
    from . import service

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            result = service.create_enrollment(s, inst.settings, serial_number=serial, unit_code=unit, created_by="cli")
    except service.NotFound as exc:
        fail(str(exc))
    emit(result, as_json)


@enroll_token.command("list")
@click.option("--all", "include_spent", is_flag=True, help="Also used, expired and revoked tokens")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def enroll_token_list(ctx, include_spent, as_json):
    """Tokens an iPad could still use (the token itself is never shown again)."""
    from . import service

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        total, rows = service.list_enrollment_tokens(s, include_spent=include_spent, limit=1000)
    if as_json:
        emit(rows, True)
        return
    for r in rows:
        click.echo(f"#{r['id']:<5} {r['state']:16} unit {r['unit'] or '-':8} serial {r['serial_number'] or '-':14} "
                   f"expires {r['expires_at']}  by {r['created_by'] or '-'}")
    click.echo(f"{total} token(s)")


@enroll_token.command("revoke")
@click.argument("token_id", type=click.IntRange(1, 2**31 - 1))
@click.pass_context
def enroll_token_revoke(ctx, token_id):
    """An unused token stops working at once (a lost QR code or URL)."""
    from . import service

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            service.revoke_enrollment_token(s, token_id)
    except (service.NotFound, ValueError) as exc:
        fail(str(exc))
    click.echo(f"enrollment token #{token_id} revoked")


@click.group()
def device():
    """Devices and their inventory."""


@device.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=1000, type=int)
@click.pass_context
def device_list(ctx, limit, as_json):
    from . import service

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        total, rows = service.list_devices(s, limit=limit)
        data = [service.device_summary(d) for d in rows]
    if as_json:
        emit(data, True)
    else:
        for d in data:
            click.echo(f"{d['udid']}  {d['serial_number'] or '-':14} {d['enrollment_state']:14} {d['os_version'] or '-'}")
        click.echo(f"{total} device(s)")


@device.command("show")
@click.argument("udid")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def device_show(ctx, udid, as_json):
    from . import service

    inst = open_instance_for(ctx)
    rt = runtime_of(ctx, inst, dispatch=False)  # every package contributes to the detail (verdict, VPN, …)
    with inst.database.session() as s:
        try:
            dev = service.get_device(s, udid)
        except service.NotFound as exc:
            fail(str(exc))
        data = service.device_detail(s, rt.hooks, dev)
    emit(data, as_json)


@device.command("re-enroll")
@click.argument("udid")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def device_reenroll(ctx, udid, as_json):
    """Authorise an erased or replaced iPad to enroll again (a one-time URL for this device only)."""
    from . import service

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            result = service.create_reenrollment(s, inst.settings, udid, created_by="cli")
    except service.NotFound as exc:
        fail(str(exc))
    log.warning("re-enrollment of %s authorised (token #%s)", udid, result["id"])
    emit(result, as_json)


@click.group()
def command():
    """MDM commands."""


@command.command("send")
@click.argument("udid")
@click.argument("request_type")
@click.option("--param", "params", multiple=True, help="KEY=VALUE (JSON values allowed), repeatable")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def command_send(ctx, udid, request_type, params, as_json):
    from . import service
    from .commands import CommandRefused
    from .protocol import ProtocolError

    parsed = None
    if params:
        parsed = {}
        for item in params:
            key, _, raw = item.partition("=")
            try:
                parsed[key] = json.loads(raw)
            except ValueError:
                parsed[key] = raw
    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            cmd = service.send_command(s, udid, request_type, parsed, requested_by="cli")
            device_id, command_uuid = cmd.device_id, cmd.uuid
    except service.NotFound as exc:
        fail(str(exc))
    except (ProtocolError, CommandRefused) as exc:
        fail(str(exc), 2)
    rt = runtime_of(ctx, inst, dispatch=True)
    pushed = rt.dispatcher.request_push([device_id])
    if hasattr(rt.dispatcher, "wait_idle"):
        rt.dispatcher.wait_idle(timeout=30)
    rt.close()
    from .models import Device

    with inst.database.session() as s:
        push = service.push_state(s.get(Device, device_id)) if pushed is not False else "deferred"
    if as_json:
        out = {"command_uuid": command_uuid, "uuid": command_uuid, "udid": udid, "request_type": request_type,
               "status": "queued", "push": push}
        if push == "deferred":
            out["push_note"] = "queued; push deferred (queue unavailable)"
        emit(out, True)
    else:
        click.echo(command_uuid)
        if push != "ok":
            click.echo(f"queued; push: {PUSH_WORDS.get(push, push)}", err=True)


PUSH_WORDS = {
    "certificate_refused": "held: Apple refuses the push certificate or it has expired (`ipad-mdm push-cert show`); "
                           "it goes out once a renewed certificate is installed",
    "off_demo": "off in demo mode (no Apple push certificate): the iPad gets the command when it next checks in",
    "no_token": "not possible yet (the iPad has not sent its push token)",
    "failing": "failed, retried with backoff (see `device show`)",
    "waiting": "waiting to be sent",
    "deferred": "deferred (queue unavailable): the push goes out when the queue is back; the iPad also gets the "
                "command at its next check-in",
}


@command.command("show")
@click.argument("command_uuid")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def command_show(ctx, command_uuid, as_json):
    from . import service

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        try:
            data = service.command_detail(s, service.get_command(s, command_uuid))
        except service.NotFound as exc:
            fail(str(exc))
    emit(data, as_json)
