"""`user` click group (mount in the main CLI as `ipad-mdm user …`).

  ipad-mdm user create USERNAME --role it_admin [--full-name …] [--unit CODE] [--leader-id N]
                                 (password from --password-stdin or an interactive prompt)
  ipad-mdm user list [--json]
  ipad-mdm user unlock USERNAME
  ipad-mdm user set-password USERNAME
"""
from __future__ import annotations

import json
import sys

import click

from ipad_mdm.cli_support import open_instance_for

from .models import CONSOLE_ROLES


def _password(from_stdin: bool) -> str:
    # Never a command-line argument: it would show in `ps` and the shell history.
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        # No terminal to ask on (a script, a pipe): say so instead of click's bare "Aborted!".
        click.echo("error: no terminal to ask for the password on; pipe it in with --password-stdin, e.g.\n"
                   "  printf '%s\\n' \"$PASSWORD\" | ipad-mdm user create NAME --role it_admin --password-stdin",
                   err=True)
        sys.exit(2)
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group()
def user():
    """Console accounts."""


@user.command("create")
@click.argument("username", required=False)
@click.option("--username", "username_option", default=None, help="The account name (or give it as the argument)")
@click.option("--role", type=click.Choice(CONSOLE_ROLES), required=True)
@click.option("--full-name", default="")
@click.option("--unit", default=None, help="Unit code")
@click.option("--leader-id", type=int, default=None, help="Gateway leader id (leader accounts)")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def create(ctx, username, username_option, role, full_name, unit, leader_id, password_stdin, as_json):
    """Create a console account: USERNAME (or --username) and --role."""
    from .accounts import AccountError, create_user

    if username and username_option and username != username_option:
        raise click.UsageError("give the account name once (argument or --username)")
    username = username or username_option
    if not username:
        raise click.UsageError("the account name is missing (ipad-mdm user create NAME --role ...)")

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            row = create_user(s, username, _password(password_stdin), role, full_name=full_name, unit=unit,
                              leader_id=leader_id, created_by="cli")
            out = {"id": row.id, "username": row.username, "role": row.role}
    except AccountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(out) if as_json else f"created {out['username']} ({out['role']})")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_users(ctx, as_json):
    from sqlalchemy import select

    from .models import User

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        rows = [{"username": u.username, "full_name": u.full_name, "role": u.role, "active": u.active,
                 "totp": u.totp_enabled, "locked_until": u.locked_until.isoformat() if u.locked_until else None}
                for u in s.scalars(select(User).order_by(User.username))]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['username']:24} {r['role']:17} {'active' if r['active'] else 'inactive'}"
                       f"{'  totp' if r['totp'] else ''}{'  locked' if r['locked_until'] else ''}")


@user.command("unlock")
@click.argument("username")
@click.pass_context
def unlock(ctx, username):
    from .accounts import find_user

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        row = find_user(s, username)
        if row is None:
            click.echo(f"error: unknown user {username}", err=True)
            sys.exit(1)
        row.locked_until, row.failed_logins = None, 0
    click.echo(f"unlocked {username}")


@user.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True)
@click.pass_context
def set_password_cmd(ctx, username, password_stdin):
    from .accounts import AccountError, find_user, set_password

    inst = open_instance_for(ctx)
    try:
        with inst.database.session() as s:
            row = find_user(s, username)
            if row is None:
                raise AccountError(f"unknown user {username}")
            set_password(s, row, _password(password_stdin))
    except AccountError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"password changed for {username}; its sessions have ended")
