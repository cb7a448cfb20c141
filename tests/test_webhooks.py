"""Events out: signed webhooks from real changes to a real HTTP receiver that verifies them as the
README says; a receiver outage loses nothing; replays and forgeries are refused by the receiver."""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from ipad_mdm.cli import main as cli_main
from ipad_mdm.db import utcnow
from ipad_mdm.outbox import OutboxEvent
from mdm.identity import revoke_identity
from mdm.models import Device, IdentityCertificate
from tests.test_edge_nginx import _office
from tests.test_gateway import api, refresh
from tests.webhook_receiver import Receiver
from webhooks import service, signing
from webhooks.models import WebhookDelivery


def _types(events, udid=None):
    return [e["type"] for e in events if udid is None or e["data"].get("udid") == udid]


def test_events_reach_the_document_system_signed_and_survive_its_outage(server, caplog):
    secret = secrets.token_urlsafe(32)
    receiver = Receiver(secret)
    officer, admin = api(server, "security_officer"), api(server, "it_admin")
    r = officer.post("/api/v1/webhooks", json={"name": "He thong van ban", "url": receiver.url, "secret": secret})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert secret not in r.text and "secret" not in hook and len(hook["events"]) == 8
    # Bad definitions: a clear 400 naming the field; it_admin may not define receivers.
    for body, field in (({"name": "x", "url": "ftp://a", "secret": secret}, "url"),
                        ({"name": "x", "url": receiver.url, "secret": "short"}, "secret"),
                        ({"name": "x", "url": receiver.url, "secret": secret, "events": ["device.exploded"]}, "events")):
        bad = officer.post("/api/v1/webhooks", json=body)
        assert bad.status_code == 400 and bad.json()["field"] == field
    assert officer.post("/api/v1/webhooks", json={"name": "He thong van ban", "url": receiver.url,
                                                  "secret": secret}).status_code == 409
    assert admin.post("/api/v1/webhooks", json={"name": "y", "url": receiver.url, "secret": secret}).status_code == 403

    # Enrollment, handover record, verdict change: each announced once, signed.
    _, _, _, (sim, other) = _office(server)
    server.wait_pushes()
    events = receiver.wait_for(lambda ev: "verdict.changed" in _types(ev, sim.udid))
    assert {"device.enrolled", "handover.changed", "verdict.changed"} <= set(_types(events, sim.udid))
    enrolled = next(e for e in events if e["type"] == "device.enrolled" and e["data"]["udid"] == sim.udid)
    assert enrolled["data"]["serial_number"] == sim.serial and enrolled["occurred_at"].endswith("Z")

    sim.state.passcode_present = False
    refresh(admin, sim)
    server.wait_pushes()
    events = receiver.wait_for(lambda ev: any(e["type"] == "verdict.changed" and e["data"]["state"] == "non_compliant"
                                              for e in ev))
    change = next(e for e in events if e["type"] == "verdict.changed" and e["data"]["state"] == "non_compliant")
    assert change["data"]["previous"] == "compliant" and change["data"]["document_access"] is False
    assert "passcode_present" in change["data"]["reasons"]

    # The receiver is down: loss declared, identity revoked — nothing lost, retried with backoff.
    receiver.close()
    r = admin.post(f"/api/v1/devices/{other.udid}/commands", json={"request_type": "EnableLostMode",
                                                                   "params": {"Message": "Vui lòng liên hệ"}})
    assert r.status_code == 201, r.text
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == other.udid))
        ident = s.scalar(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id))
        revoke_identity(s, ident, "keyCompromise")
    server.wait_pushes()
    with server.session() as s:
        service.fan_out(s)
    service.deliver_due(server.instance.database, server.instance.fernet())
    with server.session() as s:
        waiting = s.scalars(select(WebhookDelivery).where(WebhookDelivery.status == "pending")).all()
        assert {d.event for d in waiting} >= {"device.lost", "identity.revoked"}
        assert all(d.attempts >= 1 and d.last_error and d.next_attempt_at > utcnow() for d in waiting)
    listing = officer.get(f"/api/v1/webhooks/{hook['id']}/deliveries", params={"status": "pending"}).json()
    assert listing["total"] >= 2 and all(d["last_error"] for d in listing["deliveries"])
    assert officer.get(f"/api/v1/webhooks/{hook['id']}/deliveries", params={"limit": 10**9}).status_code == 400

    # Back on the same address: the next due run delivers everything that waited, once.
    receiver = Receiver(secret, port=receiver.port)
    later = utcnow() + dt.timedelta(hours=7)
    counts = service.deliver_due(server.instance.database, server.instance.fernet(), now=later)
    assert counts["delivered"] >= 2 and counts["retry"] == 0
    lost = [e for e in receiver.events if e["type"] == "device.lost"]
    assert len(lost) == 1 and lost[0]["data"]["udid"] == other.udid
    revoked = [e for e in receiver.events if e["type"] == "identity.revoked"]
    assert len(revoked) == 1 and revoked[0]["data"]["reason"] == "keyCompromise"
    assert revoked[0]["data"]["certificate_serial"] and "secret" not in json.dumps(revoked[0]).lower()

    # The receiver's checks: a captured request replayed, a changed body, an old timestamp.
    headers, body = receiver.raw[0]
    assert receiver.handle(headers, body) == 200 and receiver.rejected[-1] == "replayed"
    assert receiver.handle(headers, body.replace(b'"type"', b'"typ\\u0065"')) == 401
    assert receiver.rejected[-1] == "bad_signature"
    old = signing.headers(secret.encode(), "evt-old", "device.lost", body, timestamp=1_600_000_000)
    assert receiver.handle(old, body) == 401 and receiver.rejected[-1] == "stale_timestamp"
    # A receiver that answers 500 keeps the delivery pending; after MAX_ATTEMPTS it is failed, and
    # `retry` makes it due again.
    receiver.fail_with = 500
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        ident = s.scalar(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id))
        revoke_identity(s, ident, "superseded")
    server.wait_pushes()
    when = utcnow()
    for _ in range(service.MAX_ATTEMPTS):
        when += dt.timedelta(hours=7)
        with server.session() as s:
            service.fan_out(s)
        service.deliver_due(server.instance.database, server.instance.fernet(), now=when)
    failed = officer.get(f"/api/v1/webhooks/{hook['id']}/deliveries", params={"status": "failed"}).json()
    assert failed["total"] == 1 and failed["deliveries"][0]["attempts"] == service.MAX_ATTEMPTS
    assert failed["deliveries"][0]["last_error"] == "receiver answered 500"
    receiver.fail_with = None
    assert officer.post(f"/api/v1/webhooks/{hook['id']}/retry").json()["due_now"] == 1
    server.wait_pushes()
    receiver.wait_for(lambda ev: any(e["type"] == "identity.revoked" and e["data"]["udid"] == sim.udid for e in ev))
    # Exactly once per event, across all of the above.
    ids = [e["id"] for e in receiver.events]
    assert len(ids) == len(set(ids))
    with server.session() as s:
        assert s.scalar(select(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None))) is None
    # Ninety days on, the delivered log and its outbox events are pruned; nothing else is.
    with server.session() as s:
        delivered = s.scalar(select(func.count()).where(WebhookDelivery.status == "delivered"))
        assert service.prune(s, utcnow() + dt.timedelta(days=91)) == delivered > 0
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    # The secret never reaches a log line.
    assert secret not in caplog.text
    for c in (officer, admin):
        c.close()
    receiver.close()


def test_webhook_cli_refuses_a_readable_secret_file(server, tmp_path):
    env = {"DATABASE_URL": server.instance.settings.database_url}
    inst = str(server.instance.settings.instance_dir)
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secrets.token_urlsafe(32))
    os.chmod(secret_file, 0o644)
    runner = CliRunner()
    r = runner.invoke(cli_main, ["--instance", inst, "webhook", "add", "vb", "https://vb.example/hook",
                                 "--secret-file", str(secret_file)], env=env)
    assert r.exit_code == 2 and "chmod 600" in r.output
    os.chmod(secret_file, 0o600)
    r = runner.invoke(cli_main, ["--instance", inst, "webhook", "add", "vb", "https://vb.example/hook",
                                 "--secret-file", str(secret_file), "--event", "device.lost"], env=env)
    assert r.exit_code == 0, r.output
    assert secret_file.read_text() not in r.output
    r = runner.invoke(cli_main, ["--instance", inst, "webhook", "list"], env=env)
    assert "vb" in r.output and "device.lost" in r.output and secret_file.read_text() not in r.output


@pytest.mark.parametrize("now_offset, ok", [(0, True), (299, True), (-299, True), (301, False), (-301, False)])
def test_signature_window(now_offset, ok):
    body = b'{"id":"e1"}'
    h = signing.headers(b"k" * 32, "e1", "device.lost", body, timestamp=1_700_000_000)
    seen = set()
    try:
        signing.verify(b"k" * 32, h, body, seen=lambda i: i in seen or seen.add(i), now=1_700_000_000 + now_offset)
        assert ok
    except signing.Rejected as exc:
        assert not ok and exc.reason == "stale_timestamp"


def test_backoff_doubles_up_to_six_hours():
    assert [service.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert service.backoff(50).total_seconds() == service.MAX_BACKOFF == 6 * 3600


def test_a_pump_with_nothing_due_builds_no_http_client(server, monkeypatch):
    """Every committed change that wrote an outbox row pumps; with nothing due that pump must stay
    cheap (an httpx client loads the CA bundle: tens of ms of a worker's CPU per enrollment)."""
    def no_client(*_a, **_k):
        raise AssertionError("an HTTP client was built with nothing to deliver")

    monkeypatch.setattr(service.httpx, "Client", no_client)
    counts = service.deliver_due(server.instance.database, server.instance.fernet())
    assert counts == {"delivered": 0, "retry": 0, "failed": 0, "skipped": 0}
