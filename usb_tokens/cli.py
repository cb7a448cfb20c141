"""`ipad-mdm usb-token …`: the USB token registry from the command line. `add --from-token` reads the
signing certificate from a token plugged into this machine over PKCS#11 (public objects only: no PIN)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from ipad_mdm.cli_support import emit, fail, open_instance_for


@click.group("usb-token")
def usb_token():
    """Signing USB tokens: register, list, report lost (with the revocation request), confirm revocation."""


def _certificate(cert_file, from_token, module, token_label, token_serial):
    from .pkcs11_reader import read_token

    if from_token:
        if not module:
            fail("--from-token needs --module (the token's PKCS#11 library, e.g. /usr/lib/x86_64-linux-gnu/"
                 "libsofthsm2.so or the vendor's)", 2)
        return read_token(module, token_label=token_label, token_serial=token_serial)
    if cert_file:
        return {"certificate": Path(cert_file).read_bytes()}
    return {}


def _session(ctx):
    return open_instance_for(ctx).database.session()


def _token_or_fail(s, serial):
    from . import service

    token = service.get(s, serial)
    if token is None:
        fail(f"unknown USB token {serial}", 1)
    return token


token_source = [
    click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False), help="the signing certificate (PEM/DER)"),
    click.option("--from-token", is_flag=True, help="read the certificate from a token plugged into this machine"),
    click.option("--module", help="PKCS#11 library of the token (with --from-token)"),
    click.option("--token-label", help="which token, by label (with --from-token)"),
    click.option("--token-serial", help="which token, by its serial (with --from-token)"),
]


def _with_source(fn):
    for option in reversed(token_source):
        fn = option(fn)
    return fn


@usb_token.command("add")
@click.argument("serial", required=False)
@click.option("--kind", default="", help="token type, e.g. the CA's product name")
@click.option("--unit", default=None, help="unit code of the token's holder")
@click.option("--note", default="")
@_with_source
@click.pass_context
def add_cmd(ctx, serial, kind, unit, note, cert_file, from_token, module, token_label, token_serial):
    """Register a token (its serial from the token itself with --from-token)."""
    from ipad_mdm.models import Unit
    from sqlalchemy import select

    from . import service

    try:
        found = _certificate(cert_file, from_token, module, token_label, token_serial)
        serial = serial or found.get("serial_number")
        if not serial:
            fail("give the token's SERIAL (or --from-token to read it)", 2)
        with _session(ctx) as s:
            unit_id = None
            if unit:
                unit_id = s.scalar(select(Unit.id).where(Unit.code == unit))
                if unit_id is None:
                    fail(f"unknown unit {unit}", 2)
            token = service.register(s, serial_number=serial, kind=kind or found.get("kind", ""),
                                     certificate=found.get("certificate"),
                                     source="pkcs11" if from_token else "file", unit_id=unit_id, by="cli", note=note)
            result = service.token_dict(token)
    except service.TokenRefused as exc:
        fail(str(exc), 2)
    emit(result, True)


@usb_token.command("certificate")
@click.argument("serial")
@_with_source
@click.pass_context
def certificate_cmd(ctx, serial, cert_file, from_token, module, token_label, token_serial):
    """Load a renewed signing certificate onto a registered token."""
    from . import service

    try:
        found = _certificate(cert_file, from_token, module, token_label, token_serial)
        if not found.get("certificate"):
            fail("give --cert FILE or --from-token", 2)
        with _session(ctx) as s:
            token = _token_or_fail(s, serial)
            service.load_certificate(s, token, found["certificate"], source="pkcs11" if from_token else "file", by="cli")
            result = service.token_dict(token)
    except service.TokenRefused as exc:
        fail(str(exc), 2)
    emit(result, True)


@usb_token.command("list")
@click.option("--state", type=click.Choice(["in_stock", "handed_over", "returned", "lost", "revoked"]), default=None)
@click.option("--expiring", type=click.IntRange(0, 3650), default=None, help="certificate expires within DAYS")
@click.pass_context
def list_cmd(ctx, state, expiring):
    from sqlalchemy import select

    from ipad_mdm.db import utcnow

    from . import service
    from .models import UsbToken

    now = utcnow()
    with _session(ctx) as s:
        stmt = select(UsbToken).order_by(UsbToken.serial_number)
        if state:
            stmt = stmt.where(UsbToken.state == state)
        if expiring is not None:
            stmt = stmt.where(service.expiring_condition(now, expiring))
        emit([service.token_dict(t, now) for t in s.scalars(stmt)], True)


@usb_token.command("show")
@click.argument("serial")
@click.pass_context
def show_cmd(ctx, serial):
    from . import service

    with _session(ctx) as s:
        token = _token_or_fail(s, serial)
        result = service.token_dict(token)
        result["events"] = [{"action": e.action, "from": e.from_state, "to": e.to_state, "at": e.at.isoformat(),
                             "by": e.by, "number": e.letter_number} for e in token.events]
    emit(result, True)


@usb_token.command("lost")
@click.argument("serial")
@click.option("--circumstances", required=True, help="how and where the token was lost")
@click.option("--lost-on", type=click.DateTime(["%Y-%m-%d", "%d/%m/%Y"]), default=None)
@click.option("--letter", "letter_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write the revocation request (PDF) here")
@click.pass_context
def lost_cmd(ctx, serial, circumstances, lost_on, letter_path):
    """Record the loss and draw up the certificate revocation request for the issuing CA."""
    from . import service
    from .letter import revocation_request_pdf

    try:
        with _session(ctx) as s:
            token = _token_or_fail(s, serial)
            event = service.report_lost(s, token, by="cli", circumstances=circumstances,
                                        lost_on=lost_on.date() if isinstance(lost_on, dt.datetime) else None)
            data, number = dict(event.data), event.letter_number
            result = service.token_dict(token)
    except service.TokenRefused as exc:
        fail(str(exc), 2)
    result["revocation_request"] = f"{number}/TTTH-ATTT"
    if letter_path:
        Path(letter_path).write_bytes(revocation_request_pdf(data))
        result["letter"] = str(letter_path)
    emit(result, True)


@usb_token.command("revoked")
@click.argument("serial")
@click.option("--note", default="", help="the CA's notice (number, date)")
@click.pass_context
def revoked_cmd(ctx, serial, note):
    """Record that the issuing CA revoked the token's certificate."""
    from . import service

    try:
        with _session(ctx) as s:
            token = _token_or_fail(s, serial)
            service.mark_revoked(s, token, by="cli", note=note)
            result = service.token_dict(token)
    except service.TokenRefused as exc:
        fail(str(exc), 2)
    emit(result, True)
