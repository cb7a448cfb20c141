"""`ipad-mdm app …`: the catalog and its releases from the command line (same service as the API)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ipad_mdm.cli_support import emit, fail, open_instance_for


@click.group()
def app():
    """The office's apps: catalog, releases, acceptance, rollout, progress."""


def _run(ctx, fn):
    from . import delivery
    from .service import AppError

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            result, rollout = fn(s, inst)
            push = delivery.reconcile_all(s, inst, requested_by="cli") if rollout else []
    except AppError as exc:
        fail(exc.message, 2 if exc.status == 400 else 1)
    if push:
        rt = ctx.find_root().obj["runtime"](inst, dispatch=True)
        rt.dispatcher.request_push(push)
        if hasattr(rt.dispatcher, "wait_idle"):
            rt.dispatcher.wait_idle(timeout=30)
        rt.close()
    if isinstance(result, dict) and rollout:
        result["devices_queued"] = len(push)
    emit(result, True)


@app.command("list")
@click.pass_context
def list_cmd(ctx):
    from sqlalchemy import select

    from .api import app_dict
    from .models import App

    _run(ctx, lambda s, inst: ([app_dict(a) for a in s.scalars(select(App).order_by(App.bundle_id))], False))


@app.command("create")
@click.argument("bundle_id")
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(["inhouse", "store"]), default="inhouse")
@click.option("--app-store-id", default=None)
@click.option("--configuration", default=None, help="managed app configuration as JSON (${udid}, ${gateway_url}, …)")
@click.pass_context
def create_cmd(ctx, bundle_id, name, kind, app_store_id, configuration):
    from . import service
    from .api import app_dict

    try:
        config = json.loads(configuration) if configuration else None
    except ValueError:
        fail("--configuration is not JSON", 2)
    _run(ctx, lambda s, inst: (app_dict(service.create_app(s, bundle_id=bundle_id, name=name, kind=kind,
                                                             app_store_id=app_store_id, configuration=config,
                                                             created_by="cli")), False))


@app.command("upload")
@click.argument("bundle_id")
@click.argument("ipa", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def upload_cmd(ctx, bundle_id, ipa):
    """Add the next release of an in-house app from its .ipa (pilot units first)."""
    from ipad_mdm.files import spool

    from . import service
    from .api import release_dict
    from .service import max_upload_bytes

    def fn(s, inst):
        app_ = service.get_app(s, bundle_id)
        with open(ipa, "rb") as fh:
            tmp, _digest, _size = spool(fh, service.app_dir(inst) / "incoming", max_upload_bytes())
        return release_dict(service.add_inhouse_release(s, inst, app_, tmp, created_by="cli")), True

    _run(ctx, fn)


@app.command("accept")
@click.argument("bundle_id")
@click.argument("version")
@click.option("--minute", "minute", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the signed acceptance minute (biên bản nghiệm thu)")
@click.option("--by", "by", required=True, help="who accepted (name of the officer)")
@click.option("--notes", default=None)
@click.pass_context
def accept_cmd(ctx, bundle_id, version, minute, by, notes):
    from . import service
    from .api import release_dict

    def fn(s, inst):
        release = service.get_release(service.get_app(s, bundle_id), version)
        service.accept(s, inst, release, by=f"cli:{by}", minute=minute.read_bytes(), filename=minute.name, notes=notes)
        return release_dict(release), True

    _run(ctx, fn)


@app.command("rollout")
@click.argument("bundle_id")
@click.argument("version")
@click.argument("action", type=click.Choice(["pause", "resume", "withdraw"]))
@click.pass_context
def rollout_cmd(ctx, bundle_id, version, action):
    from . import service
    from .api import release_dict

    def fn(s, inst):
        release = service.get_release(service.get_app(s, bundle_id), version)
        if action == "withdraw":
            service.withdraw(release)
        else:
            service.set_paused(release, action == "pause")
        return release_dict(release), True

    _run(ctx, fn)


@app.command("progress")
@click.argument("bundle_id")
@click.pass_context
def progress_cmd(ctx, bundle_id):
    from . import delivery, service

    _run(ctx, lambda s, inst: (delivery.progress(s, service.get_app(s, bundle_id)), False))
