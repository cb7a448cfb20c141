"""`gateway` click group (mounted in the main CLI as `ipad-mdm gateway …`).

  ipad-mdm gateway audit-verify [--json]   recompute the audit hash chain; exit 0 if intact,
                                            2 if a row was altered, removed or re-ordered
"""
from __future__ import annotations

import json
import sys

import click


def _open_instance(ctx):
    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance

    root = ctx.find_root()
    instance_dir = (root.obj or {}).get("instance") if isinstance(root.obj, dict) else None
    instance_dir = (ctx.obj or {}).get("gateway_instance") or instance_dir
    return open_instance(load_settings(instance_dir))


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
    """Verify the gateway audit log's hash chain."""
    from .audit import verify_chain

    inst = _open_instance(ctx)
    try:
        with inst.database.session() as s:
            ok, bad, checked = verify_chain(s)
    finally:
        inst.database.dispose()
    if as_json:
        click.echo(json.dumps({"ok": ok, "first_bad_id": bad, "checked": checked}))
    elif ok:
        click.echo(f"audit chain intact: {checked} rows checked")
    else:
        click.echo(f"audit chain BROKEN at row {bad} ({checked} rows verified before it)", err=True)
    sys.exit(0 if ok else 2)
