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


# ------------------------------------------------------------------ the office's document system behind nginx
@gateway.command("nginx-config")
@click.option("--server-name", required=True, help="Host name the iPads use for the document system")
@click.option("--listen", default="443", show_default=True, help="nginx listen address")
@click.option("--tls-cert", required=True, help="nginx's TLS certificate (chain) for that name")
@click.option("--tls-key", required=True, help="its private key")
@click.option("--upstream", "upstream_url", required=True, help="the document system, http(s)://host:port")
@click.option("--mdm-url", default=None, help="where nginx reaches ipad-mdm (default: the instance's base URL)")
@click.option("--output", type=click.Path(dir_okay=False), required=True,
              help="file to write (0600: it holds the proxy secret)")
@click.pass_context
def nginx_config(ctx, server_name, listen, tls_cert, tls_key, upstream_url, mdm_url, output):
    """Fill the shipped nginx template (deploy/nginx/ipad-mdm-edge.conf.template) for this instance:
    mTLS against the project CA, auth_request to /edge/decide, the document system upstream.
    Needs IPAD_MDM_PROXY_SECRET and IPAD_MDM_CLIENT_CERT_HEADER as the server runs with."""
    from pathlib import Path

    from ipad_mdm.files import write_atomic

    from .edge_nginx import ConfigError, EdgeSite, render

    inst = open_instance_for(ctx, (ctx.obj or {}).get("gateway_instance"))
    settings = inst.settings
    inst.database.dispose()
    if not settings.proxy_secret or not settings.client_cert_header:
        click.echo("Set IPAD_MDM_PROXY_SECRET and IPAD_MDM_CLIENT_CERT_HEADER (as the server runs with) first.",
                   err=True)
        sys.exit(2)
    ca = str(settings.ca_dir / "ca.pem")
    try:
        text = render(EdgeSite(listen=listen, server_name=server_name, tls_cert=tls_cert, tls_key=tls_key,
                               client_ca=ca, mdm_url=mdm_url or settings.base_url, mdm_ca=ca,
                               upstream_url=upstream_url, proxy_secret=settings.proxy_secret,
                               client_cert_header=settings.client_cert_header))
    except ConfigError as exc:
        click.echo(f"cannot write the nginx configuration: {exc}", err=True)
        sys.exit(2)
    write_atomic(Path(output), text.encode(), private_parent=False)
    click.echo(f"wrote {output} (0600); check it with: nginx -t")


@gateway.group("edge-rule")
def edge_rule():
    """Classification of the document system's URIs at the edge (first match by position)."""


@edge_rule.command("add")
@click.option("--name", required=True)
@click.option("--pattern", required=True, help="/mat/** (glob), a prefix, or a regular expression")
@click.option("--kind", "pattern_kind", type=click.Choice(["glob", "prefix", "regex"]), default="glob", show_default=True)
@click.option("--classification", required=True,
              type=click.Choice(["public", "internal", "confidential", "secret", "from_upstream"]))
@click.option("--method", "methods", multiple=True, help="only these methods (repeat); default every method")
@click.option("--host", default="", help="only this host")
@click.option("--position", type=int, default=None, help="order (lower first); default after the last rule")
@click.pass_context
def edge_rule_add(ctx, name, pattern, pattern_kind, classification, methods, host, position):
    """Add a rule; it applies to the next request in every process."""
    from .edge_rules import RuleError, add_rule, rule_dict

    inst = open_instance_for(ctx, (ctx.obj or {}).get("gateway_instance"))
    try:
        with inst.database.session() as s:
            rule = rule_dict(add_rule(s, {"name": name, "pattern": pattern, "pattern_kind": pattern_kind,
                                          "classification": classification, "methods": list(methods), "host": host,
                                          "position": position}, actor="cli"))
    except RuleError as exc:
        click.echo(f"rule not added: {exc}", err=True)
        sys.exit(2)
    finally:
        inst.database.dispose()
    click.echo(f"rule {rule['id']} at position {rule['position']}: {rule['pattern']} -> {rule['classification']}")


@edge_rule.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def edge_rule_list(ctx, as_json):
    """The rules in the order they are tried, and the default classification."""
    from sqlalchemy import select

    from .edge_models import EdgeRule
    from .edge_rules import ensure_ruleset, rule_dict, ruleset_dict

    inst = open_instance_for(ctx, (ctx.obj or {}).get("gateway_instance"))
    try:
        with inst.database.session() as s:
            head = ruleset_dict(ensure_ruleset(s))
            rules = [rule_dict(r) for r in s.scalars(select(EdgeRule).order_by(EdgeRule.position, EdgeRule.id))]
    finally:
        inst.database.dispose()
    if as_json:
        click.echo(json.dumps({"ruleset": head, "rules": rules}, ensure_ascii=False))
        return
    for r in rules:
        click.echo(f"{r['id']:>4} {r['position']:>6}  {r['pattern_kind']:<6} {r['pattern']:<40} "
                   f"{','.join(r['methods']) or '*':<10} {r['host'] or '*':<20} {r['classification']}")
    click.echo(f"no rule matches -> {head['default_classification']}")


@edge_rule.command("delete")
@click.argument("rule_id", type=int)
@click.pass_context
def edge_rule_delete(ctx, rule_id):
    from .edge_rules import delete_rule

    inst = open_instance_for(ctx, (ctx.obj or {}).get("gateway_instance"))
    try:
        with inst.database.session() as s:
            found = delete_rule(s, rule_id)
    finally:
        inst.database.dispose()
    if not found:
        click.echo(f"no rule {rule_id}", err=True)
        sys.exit(1)
    click.echo(f"rule {rule_id} deleted")
