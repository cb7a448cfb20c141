"""`ipad-mdm ade …`: Automated Device Enrollment through Apple Business Manager.

  ipad-mdm ade public-key --output ipad-mdm-ade.pem     the certificate to upload in ABM
  ipad-mdm ade token add server-token.p7m               the server token ABM gives back
  ipad-mdm ade token list
  ipad-mdm ade sync                                     the iPads ABM assigned to this server
  ipad-mdm ade profile --department … --phone … --email …   the enrollment profile at Apple
"""
from __future__ import annotations

import json
import sys

import click

from ipad_mdm.cli_support import open_instance_for


@click.group()
def ade():
    """Automated Device Enrollment (Apple Business Manager)."""


@ade.command("public-key")
@click.option("--output", type=click.Path(dir_okay=False), required=True)
@click.pass_context
def public_key(ctx, output):
    from cryptography.hazmat.primitives import serialization

    from .token import keypair

    inst = open_instance_for(ctx)
    inst.database.dispose()
    cert, _ = keypair(inst.settings.instance_dir)
    with open(output, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    click.echo(f"wrote {output}: upload it in Apple Business Manager (MDM server → public key)")


@ade.group("token")
def token_group():
    """Server tokens from Apple Business Manager."""


@token_group.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def token_add(ctx, path):
    from .service import AdeError, add_token, token_dict

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            data = open(path, "rb").read()
            click.echo(json.dumps(token_dict(add_token(s, inst, data, by="cli")), ensure_ascii=False))
    except AdeError as exc:
        click.echo(f"token not added: {exc}", err=True)
        sys.exit(2)
    finally:
        inst.database.dispose()


@token_group.command("list")
@click.pass_context
def token_list(ctx):
    from sqlalchemy import select

    from .models import AdeToken
    from .service import token_dict

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            click.echo(json.dumps([token_dict(r) for r in s.scalars(select(AdeToken).order_by(AdeToken.id))],
                                  ensure_ascii=False))
    finally:
        inst.database.dispose()


def _each_token(ctx, fn):
    from sqlalchemy import select

    from .models import AdeToken
    from .service import AdeError

    inst = open_instance_for(ctx)
    rt = ctx.find_root().obj["runtime"](inst, dispatch=True)  # every package's hooks (the console registers)
    out, failed = {}, False
    try:
        for token_id in _ids(inst, select(AdeToken.id)):
            try:
                with inst.database.session() as s:
                    out[token_id] = fn(s, inst, rt.hooks, s.get(AdeToken, token_id))
            except AdeError as exc:
                out[token_id], failed = {"error": exc.code, "detail": str(exc)}, True
    finally:
        inst.database.dispose()
    click.echo(json.dumps(out, ensure_ascii=False))
    if failed:
        sys.exit(2)


def _ids(inst, stmt):
    with inst.database.session() as s:
        return list(s.scalars(stmt))


@ade.command("sync")
@click.pass_context
def sync_cmd(ctx):
    from .service import sync

    _each_token(ctx, lambda s, inst, hooks, row: sync(s, inst, hooks, row))


@ade.command("profile")
@click.option("--department", required=True)
@click.option("--phone", required=True)
@click.option("--email", required=True)
@click.pass_context
def profile_cmd(ctx, department, phone, email):
    from .service import define_profile

    _each_token(ctx, lambda s, inst, hooks, row: define_profile(s, inst, row, department=department, support_phone=phone,
                                                         support_email=email, by="cli"))
