"""`ipad-mdm push-cert show | install`: the push certificate from the command line."""
from __future__ import annotations

import click

from ipad_mdm.cli_support import emit, fail, open_instance_for


@click.group("push-cert")
def push_cert():
    """The Apple push (APNs) certificate: state, renewal."""


@push_cert.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx, as_json):
    """Topic, expiry, what APNs last said, pushes waiting, iPads by topic."""
    from . import service

    inst = open_instance_for(ctx)
    with inst.database.session() as s:
        emit(service.status(s, inst), as_json)


@push_cert.command("install")
@click.option("--cert", "cert_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The certificate Apple issued, PEM")
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Its private key, PEM, unencrypted")
@click.option("--confirm-topic-change", is_flag=True,
              help="Install although the topic differs from the enrolled iPads' (they must all enrol again)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def install(ctx, cert_path, key_path, confirm_topic_change, as_json):
    """Install a renewed push certificate; every server process uses it from its next push."""
    from pathlib import Path

    from .certificate import PushCertificateRefused, TopicChangeRefused
    from .service import install_and_wake

    inst = open_instance_for(ctx)
    runtime = ctx.find_root().obj["runtime"](inst, dispatch=True)
    try:
        with inst.database.session(dispatcher=runtime.dispatcher) as s:
            out = install_and_wake(s, inst, Path(cert_path).read_bytes(), Path(key_path).read_bytes(),
                                   confirm=confirm_topic_change, by="cli")
    except TopicChangeRefused as exc:
        fail(str(exc), code=3)
    except PushCertificateRefused as exc:
        fail(str(exc))
    emit(out, as_json)
