"""`gateway` click group (mounted in the main CLI as `ipad-mdm gateway …`).

  ipad-mdm gateway audit-verify [--json]   verify the keyed audit chain and its signed checkpoints;
                                            exit 0 if intact, 2 if not (first bad row named)
  ipad-mdm gateway audit-checkpoint        verify since the last checkpoint and sign a new one
  ipad-mdm gateway audit-quarantine --confirm   move rows past the chain head aside
"""
from __future__ import annotations

import json
import sys

import click

from ipad_mdm.cli_support import open_instance_for


@click.group()
@click.option("--instance", "instance_dir", default=None, help="Instance folder (overrides the main option)")
@click.pass_context
def gateway(ctx, instance_dir):
    """Document gateway maintenance."""
    ctx.ensure_object(dict)
    if instance_dir:
        ctx.obj["gateway_instance"] = instance_dir


@gateway.command("audit-verify")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
@click.pass_context
def audit_verify(ctx, as_json):
    """Verify the whole audit chain (keyed hashes, head, signed checkpoints). Exit 0 if intact,
    2 if a row was altered, removed, re-ordered, cut off or added outside the gateway (the
    first bad row is named and a security event is raised)."""
    from . import audit

    inst = open_instance_for(ctx, (ctx.obj or {}).get("gateway_instance"))
    try:
        with inst.database.session() as s:
            status = audit.full_check(s, inst)
            if not status.ok:
                audit.raise_alarm(s, status, source="audit-verify")
    finally:
        inst.database.dispose()
    if as_json:
        click.echo(json.dumps({**status.as_dict(), "description": audit.describe(status)}))
    elif status.ok:
        click.echo(f"{audit.describe(status)}; newest signed checkpoint at row {status.last_checkpoint_seq or '-'}")
    else:
        click.echo(f"audit chain BROKEN at row {status.first_bad_id}: {audit.describe(status)} "
                   f"({status.checked} rows verified before it)", err=True)
    sys.exit(0 if status.ok else 2)


@gateway.command("audit-checkpoint")
@click.pass_context
def audit_checkpoint(ctx):
    """Verify the chain since the last checkpoint and sign a new one (the periodic job, by hand)."""
    from . import audit

    inst = open_instance_for(ctx, (ctx.obj or {}).get("gateway_instance"))
    try:
        status = audit.check_and_checkpoint(inst.database, inst)
    finally:
        inst.database.dispose()
    click.echo(audit.describe(status) if status.ok else f"audit chain BROKEN: {audit.describe(status)}")
    sys.exit(0 if status.ok else 2)


@gateway.command("audit-quarantine")
@click.option("--confirm", is_flag=True, help="Really move the rows past the chain head")
@click.pass_context
def audit_quarantine(ctx, confirm):
    """Move rows found past the chain head (they stop the gateway) into gateway_audit_quarantine."""
    from . import audit

    if not confirm:
        click.echo("nothing done: add --confirm after the rows have been examined (ipad-mdm gateway audit-verify)",
                   err=True)
        sys.exit(1)
    inst = open_instance_for(ctx, (ctx.obj or {}).get("gateway_instance"))
    try:
        with inst.database.session() as s:
            moved = audit.quarantine_beyond_head(s)
    finally:
        inst.database.dispose()
    click.echo(f"{moved} row(s) moved to gateway_audit_quarantine")
