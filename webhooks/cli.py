"""`ipad-mdm webhook …`: receivers of the server's events (signed HTTP POSTs).

  ipad-mdm webhook add NAME URL --secret-file F [--event E …]   F holds the shared secret (0600)
  ipad-mdm webhook list
  ipad-mdm webhook deliveries NAME [--status failed]
  ipad-mdm webhook retry NAME
  ipad-mdm webhook deliver        fan out and deliver what is due now (the periodic job, by hand)
"""
from __future__ import annotations

import json
import os
import stat
import sys

import click

from ipad_mdm.cli_support import open_instance_for
from ipad_mdm.outbox import EVENTS


@click.group()
def webhook():
    """Signed webhooks: events for the office's document system."""


def _subscriber(s, name):
    from sqlalchemy import select

    from .models import WebhookSubscriber

    row = s.scalar(select(WebhookSubscriber).where(WebhookSubscriber.name == name))
    if row is None:
        click.echo(f"no webhook named {name}", err=True)
        sys.exit(1)
    return row


@webhook.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--secret-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="file holding the shared secret (32-256 characters); must not be readable by others")
@click.option("--event", "events", multiple=True, type=click.Choice(EVENTS), help="repeat; default every event")
@click.pass_context
def add(ctx, name, url, secret_file, events):
    from . import service

    if os.stat(secret_file).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(f"{secret_file} is readable by others: chmod 600 it first", err=True)
        sys.exit(2)
    secret = open(secret_file, encoding="utf-8").read().strip()
    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            row = service.add_subscriber(s, inst.fernet(), name=name, url=url, secret=secret,
                                         events=list(events) or None, by="cli")
            click.echo(f"webhook {row.id} {row.name} -> {row.url} ({', '.join(row.events)})")
    except service.WebhookError as exc:
        click.echo(f"webhook not added: {exc}", err=True)
        sys.exit(2)
    finally:
        inst.database.dispose()


@webhook.command("list")
@click.pass_context
def list_(ctx):
    from sqlalchemy import select

    from .models import WebhookSubscriber

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            for r in s.scalars(select(WebhookSubscriber).order_by(WebhookSubscriber.id)):
                click.echo(f"{r.id:>4} {r.name:<24} {'active' if r.active else 'paused':<7} {r.url}  "
                           f"{','.join(r.events)}")
    finally:
        inst.database.dispose()


@webhook.command("deliveries")
@click.argument("name")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_context
def deliveries(ctx, name, status, limit):
    from sqlalchemy import select

    from . import service
    from .models import WebhookDelivery

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            sub = _subscriber(s, name)
            q = select(WebhookDelivery).where(WebhookDelivery.subscriber_id == sub.id)
            if status:
                q = q.where(WebhookDelivery.status == status)
            for d in s.scalars(q.order_by(WebhookDelivery.id.desc()).limit(limit)):
                click.echo(json.dumps(service.delivery_dict(d), ensure_ascii=False))
    finally:
        inst.database.dispose()


@webhook.command("retry")
@click.argument("name")
@click.pass_context
def retry(ctx, name):
    from . import service

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            n = service.retry(s, _subscriber(s, name).id)
    finally:
        inst.database.dispose()
    click.echo(f"{n} delivery(ies) due now; `ipad-mdm webhook deliver` or the next periodic run sends them")


@webhook.command("deliver")
@click.pass_context
def deliver(ctx):
    from . import service

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            events = service.fan_out(s)
        counts = service.deliver_due(inst.database, inst.fernet())
    finally:
        inst.database.dispose()
    click.echo(json.dumps({"events": events, **counts}))
