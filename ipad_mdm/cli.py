"""The `ipad-mdm` command line."""
from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import sys

import click

from .cli_support import emit, fail, open_instance_for
from .config import load_settings


def _settings(ctx, **overrides):
    return load_settings(ctx.obj.get("instance"), **overrides)


def _instance(ctx, **overrides):
    return open_instance_for(ctx, **overrides)


def _runtime(inst, *, dispatch: bool):
    """For package CLIs (ctx.obj["runtime"]): every package's hooks, and a dispatcher that
    really pushes (`command send`) or does nothing (read-only commands)."""
    from .app import create_app
    from .dispatch import NoDispatch

    app = create_app(inst=inst, dispatcher=None if dispatch else NoDispatch(), serving=False)
    return app.extensions["ipad_mdm.runtime"]


class _PackageCommands(click.Group):
    """The core's own commands, plus each package's CLI group imported only when it is asked for."""

    def list_commands(self, ctx):
        from .packages import CLI_COMMANDS

        return sorted(set(super().list_commands(ctx)) | set(CLI_COMMANDS))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from .crypto.pkcs11_keys import Pkcs11Error

            if isinstance(exc, Pkcs11Error):  # the token is away or refuses its PIN: say so, no traceback
                fail(exc.message("en"), code=75)  # EX_TEMPFAIL: try again once the token is back
            raise

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            from .manifest import resolve
            from .packages import CLI_COMMANDS

            if name in CLI_COMMANDS:
                command = resolve(CLI_COMMANDS[name])
                self.add_command(command, name)
        return command


@click.group(cls=_PackageCommands)
@click.option("--instance", "instance_dir", envvar="IPAD_MDM_INSTANCE", default=None,
              help="Instance folder (database, CA, keys). Default ./instance")
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def main(ctx, instance_dir, verbose):
    """ipad-mdm: MDM server for the office's iPads."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Routine chatter of libraries (a schema check on every call, font discovery) is not news.
        for name in ("alembic", "matplotlib", "fontTools", "PIL"):
            logging.getLogger(name).setLevel(logging.WARNING)
    ctx.ensure_object(dict)
    ctx.obj["instance"] = instance_dir
    ctx.obj["runtime"] = _runtime


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--instance", "instance_dir", default=None, help="Instance folder (overrides the group option)")
@click.option("--base-url", envvar="IPAD_MDM_BASE_URL", default=None,
              help="Public https:// URL when a TLS proxy sits in front; also disables local TLS if it is http://")
@click.option("--no-tls", is_flag=True, help="Serve plain HTTP (only behind a TLS-terminating proxy)")
@click.pass_context
def serve(ctx, host, port, instance_dir, base_url, no_tls):
    """Serve everything on the embedded default (SQLite, demo CA, TLS)."""
    if instance_dir:
        ctx.obj["instance"] = instance_dir
    if not base_url:
        public_host = socket.getfqdn() if host in ("0.0.0.0", "::") else host
        base_url = f"https://{public_host}:{port}"
    from werkzeug.serving import run_simple

    from .app import create_app
    from .instance import open_instance
    from .scheduler import EmbeddedScheduler

    inst = open_instance(_settings(ctx, base_url=base_url.rstrip("/")))
    _record_base_url(inst)
    app = create_app(inst=inst)
    first = _first_enrollment(inst)
    if inst.settings.celery_broker_url:
        click.echo("periodic jobs: Celery beat (CELERY_BROKER_URL is set)")
    else:
        EmbeddedScheduler(app).start()
    ssl_context = None
    if not no_tls:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        ssl_context.load_cert_chain(str(inst.server_cert_path), str(inst.server_key_path))
        # Ask for (but do not require) a client certificate: the document
        # gateway accepts device identities presented over mTLS.
        ssl_context.verify_mode = ssl.CERT_OPTIONAL
        ssl_context.load_verify_locations(cadata=inst.ca.certificate_pem.decode())
    scheme = "http" if no_tls else "https"
    click.echo(f"ipad-mdm serving {scheme}://{host}:{port} (public URL {inst.settings.base_url})")
    click.echo(f"instance: {inst.settings.instance_dir}")
    click.echo(f"CA certificate: {inst.settings.base_url}/mdm/ca")
    # The URL carries the one-time token: it goes to a 0600 file and to an interactive terminal,
    # never into a log (stdout of a service is a log).
    click.echo(f"Enrollment token #{first['id']} (one-time, expires {first['expires_at']}): "
               f"its URL is in {first['path']}")
    if sys.stdout.isatty():
        click.echo(f"Enrollment URL: {first['url']}")
    sys.stdout.flush()
    run_simple(host, port, app, threaded=True, ssl_context=ssl_context, use_reloader=False)


def _record_base_url(inst) -> None:
    """The CLI of this instance builds its URLs from the running server's (config.recorded_base_url)."""
    from .config import BASE_URL_FILE
    from .files import write_atomic

    write_atomic(inst.settings.instance_dir / BASE_URL_FILE, (inst.settings.base_url + "\n").encode())


def _first_enrollment(inst) -> dict:
    """The enrollment token `serve` offers: the one it made before if still unused, else a new one.
    Its URL is kept in secrets/enrollment-url.json (0600)."""
    from mdm import service
    from mdm.models import EnrollmentToken

    from .crypto.keys import write_secret_file
    from .db import utcnow

    path = inst.settings.secrets_dir / "enrollment-url.json"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None
    with inst.database.session() as s:
        row = s.get(EnrollmentToken, kept.get("id")) if isinstance(kept, dict) and isinstance(kept.get("id"), int) else None
        usable = (row is not None and row.profile_fetched_at is None and row.revoked_at is None
                  and row.expires_at > utcnow() and kept.get("url", "").startswith(inst.settings.base_url + "/"))
        if not usable:
            kept = service.create_enrollment(s, inst.settings, created_by="serve")
            kept = {k: kept[k] for k in ("id", "url", "expires_at")}
    if not usable:
        write_secret_file(path, json.dumps(kept).encode())
    return {**kept, "path": str(path)}


@main.group("api-token")
def api_token():
    """Bearer tokens for /api/v1."""


@api_token.command("create")
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(["it_admin", "security_officer", "leader", "auditor"]))
@click.option("--unit", default=None, help="Limit the token to one unit's devices (unit code)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def api_token_create(ctx, name, role, unit, as_json):
    from sqlalchemy import select

    from .auth import create_api_token
    from .models import Unit

    inst = _instance(ctx)
    with inst.database.session() as s:
        unit_row = s.scalar(select(Unit).where(Unit.code == unit)) if unit else None
        if unit and unit_row is None:
            fail(f"unknown unit {unit!r}; add it with `ipad-mdm unit add CODE NAME`")
        token = create_api_token(s, name, role, unit_row.id if unit_row else None)
    emit({"name": name, "role": role, "unit": unit, "token": token}, as_json)


@main.group("security-event")
def security_event():
    """Security events (takeover attempts, tampering): list and acknowledge."""


@security_event.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only events not yet acknowledged")
@click.option("--limit", default=100, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def security_event_list(ctx, open_only, limit, as_json):
    from . import security_events

    inst = _instance(ctx)
    with inst.database.session() as s:
        _total, rows = security_events.query(s, limit=limit, open_only=open_only)
        data = [security_events.to_dict(e) for e in rows]
    if as_json:
        emit(data, True)
        return
    for e in data:
        state = "open" if e["acknowledged_at"] is None else "acknowledged"
        click.echo(f"#{e['id']} {e['at']} {e['severity']:8} {e['kind']} {e['udid'] or '-'} [{state}]")
        click.echo(f"    {e['summary_en']}")
    click.echo(f"{len(data)} event(s)")


@security_event.command("ack")
@click.argument("event_id", type=int)
@click.option("--note", default="")
@click.option("--by", default="cli")
@click.pass_context
def security_event_ack(ctx, event_id, note, by):
    from . import security_events

    inst = _instance(ctx)
    try:
        with inst.database.session() as s:
            security_events.acknowledge(s, event_id, by=by, note=note)
    except security_events.EventNotFound as exc:
        fail(str(exc))
    click.echo(f"security event #{event_id} acknowledged")


@main.group()
def unit():
    """Organisational units."""


@unit.command("add")
@click.argument("code")
@click.argument("name_vi")
@click.option("--name-en", default="")
@click.option("--stage", type=click.Choice(["pilot", "general"]), default="pilot")
@click.pass_context
def unit_add(ctx, code, name_vi, name_en, stage):
    """Add a unit: CODE (e.g. TTTH) and its Vietnamese name."""
    from sqlalchemy import select

    from .models import Unit

    code = code.strip().upper()
    if not code or len(code) > 32 or not name_vi.strip():
        fail("a unit needs a code (up to 32 characters) and a name")
    inst = _instance(ctx)
    with inst.database.session() as s:
        if s.scalar(select(Unit.id).where(Unit.code == code)) is not None:
            fail(f"unit {code} exists already (ipad-mdm unit list)")
        s.add(Unit(code=code, name_vi=name_vi.strip(), name_en=name_en.strip(), stage=stage))
    click.echo(f"unit {code} added")


@unit.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def unit_list(ctx, as_json):
    from sqlalchemy import select

    from .models import Unit

    inst = _instance(ctx)
    with inst.database.session() as s:
        rows = [{"code": u.code, "name_vi": u.name_vi, "name_en": u.name_en, "stage": u.stage}
                for u in s.scalars(select(Unit).order_by(Unit.code))]
    if as_json:
        emit(rows, True)
        return
    for u in rows:
        click.echo(f"{u['code']:10} {u['stage']:8} {u['name_vi']}")
    click.echo(f"{len(rows)} unit(s)")


@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx):
    """Apply Alembic migrations (every branch head)."""
    _instance(ctx)
    click.echo("database is at the newest revision")


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
