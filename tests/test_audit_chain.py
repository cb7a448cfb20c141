"""The gateway audit chain against someone who can write the database (attack run, finding 1):
keyed hashes, signed checkpoints, rows past the head, truncation, and what the gateway does."""
from __future__ import annotations

import base64
import hashlib
import json
import stat

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from document_gateway import audit
from document_gateway.cli import gateway as gateway_cli
from document_gateway.models import AuditCheckpoint, GatewayAuditEvent
from ipad_mdm.crypto import cms
from ipad_mdm.security_events import SecurityEvent
from tests.test_gateway import gw, world  # noqa: F401  (fixtures)


def _lift_triggers(conn):
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE gateway_audit_events DISABLE TRIGGER gateway_audit_append_only"))
        conn.execute(text("ALTER TABLE gateway_audit_checkpoints DISABLE TRIGGER gateway_audit_checkpoints_append_only"))
    else:
        for name in ("gateway_audit_no_update", "gateway_audit_no_delete", "gateway_audit_checkpoints_no_delete"):
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def _status(world):
    with world.server.session() as s:
        return audit.full_check(s, world.server.instance)


def _cli(world, *args):
    env = {"DATABASE_URL": world.server.instance.settings.database_url}
    return CliRunner().invoke(gateway_cli, ["--instance", str(world.server.instance.settings.instance_dir), *args],
                              env=env)


def _traffic(world, n):
    for _ in range(n):
        assert world.ipad.get("/docs/").status_code == 200


def _alarms(world):
    with world.server.session() as s:
        return list(s.scalars(select(SecurityEvent).where(SecurityEvent.kind == "audit_chain_tampered")))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_rewritten_chain_is_detected_without_the_key(world):
    """Drop the triggers, rewrite a row, recompute every hash (plain SHA-256, as the old chain was)
    and move the head: the keyed chain still names the row."""
    _traffic(world, 5)
    with world.server.session() as s:
        rows = s.execute(select(GatewayAuditEvent).order_by(GatewayAuditEvent.id)).scalars().all()
        assert {r.chain_version for r in rows} == {2}
        fields = [{k: getattr(r, k) for k in audit._HASHED} for r in rows]
    target = 3
    fields[target - 1]["reason_en"] = "nothing to see here"
    with world.server.instance.database.engine.begin() as conn:
        _lift_triggers(conn)
        prev = audit.GENESIS_HASH
        for f in fields:
            h = hashlib.sha256((prev + audit.canonical_json(f)).encode()).hexdigest()
            conn.execute(text("UPDATE gateway_audit_events SET reason_en = :r, prev_hash = :p, row_hash = :h "
                              "WHERE id = :i"), {"r": f["reason_en"], "p": prev, "h": h, "i": f["id"]})
            prev = h
        conn.execute(text("UPDATE gateway_audit_head SET last_hash = :h WHERE id = 1"), {"h": prev})
    status = _status(world)
    assert (status.ok, status.first_bad_id, status.problem) == (False, 1, "row_altered")
    # Even marking the forged rows as "old" unkeyed rows does not help.
    with world.server.instance.database.engine.begin() as conn:
        conn.execute(text("UPDATE gateway_audit_events SET chain_version = 1"))
    status = _status(world)
    assert not status.ok
    res = _cli(world, "audit-verify")
    assert res.exit_code == 2 and "BROKEN at row" in res.output
    assert len(_alarms(world)) == 1


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_checkpoints_catch_truncation(world):
    _traffic(world, 6)
    res = _cli(world, "audit-checkpoint")
    assert res.exit_code == 0, res.output
    with world.server.session() as s:
        [cp] = s.scalars(select(AuditCheckpoint)).all()
        assert cp.seq >= 6
    # Signed with the profile-signing key, verifiable by anyone with the CA certificate.
    signed = cms.verify(cp.signature, detached_content=audit._checkpoint_bytes(cp.seq, cp.head_hash, cp.at))
    assert signed.signer == world.server.instance.signer_cert
    cp_file = audit.checkpoint_file(world.server.instance)
    assert stat.S_IMODE(cp_file.stat().st_mode) == 0o600 and stat.S_IMODE(cp_file.parent.stat().st_mode) == 0o700
    assert json.loads(cp_file.read_text().splitlines()[-1])["seq"] == cp.seq

    # Cut the last three rows off and move the head back to a consistent state; also delete the
    # checkpoint from the database. The instance's checkpoint file still tells.
    keep = cp.seq - 3
    with world.server.instance.database.engine.begin() as conn:
        _lift_triggers(conn)
        last_hash = conn.execute(text("SELECT row_hash FROM gateway_audit_events WHERE id = :i"), {"i": keep}).scalar()
        conn.execute(text("DELETE FROM gateway_audit_events WHERE id > :i"), {"i": keep})
        conn.execute(text("UPDATE gateway_audit_head SET last_seq = :s, last_hash = :h WHERE id = 1"),
                     {"s": keep, "h": last_hash})
        conn.execute(text("DELETE FROM gateway_audit_checkpoints"))
    status = _status(world)
    assert (status.ok, status.first_bad_id, status.problem) == (False, keep + 1, "rows_truncated")
    res = _cli(world, "audit-verify", "--json")
    assert res.exit_code == 2 and json.loads(res.output)["problem"] == "rows_truncated"
    # The periodic job raises the alarm too (once).
    from document_gateway.jobs import audit_checkpoint

    assert audit_checkpoint(world.server.runtime)["ok"] is False
    assert len(_alarms(world)) == 1


def test_forged_checkpoint_is_refused(world):
    _traffic(world, 2)
    assert _cli(world, "audit-checkpoint").exit_code == 0
    with world.server.session() as s:
        cp = s.scalars(select(AuditCheckpoint)).one()
    forged = dict(seq=cp.seq, head_hash="f" * 64, at=cp.at.isoformat(), signature=base64.b64encode(cp.signature).decode())
    path = audit.checkpoint_file(world.server.instance)
    path.write_text(path.read_text() + json.dumps(forged) + "\n")
    status = _status(world)
    assert (status.ok, status.problem) == (False, "checkpoint_invalid")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_row_past_the_head_fails_the_gateway_closed_with_a_reason(world, caplog):
    _traffic(world, 2)
    with world.server.session() as s:
        head_seq = s.execute(text("SELECT last_seq FROM gateway_audit_head")).scalar()
        row = s.get(GatewayAuditEvent, head_seq)
        forged = {c.name: getattr(row, c.name) for c in GatewayAuditEvent.__table__.columns}
    forged.update(id=head_seq + 1, reason_en="forged")
    with world.server.instance.database.engine.begin() as conn:
        conn.execute(GatewayAuditEvent.__table__.insert().values(**forged))
    status = _status(world)
    assert (status.ok, status.first_bad_id, status.problem) == (False, head_seq + 1, "row_beyond_head")

    # Fail closed, explained: 503 with the reason and Retry-After, never a document, every time.
    for _ in range(3):
        r = world.ipad.get(f"/docs/{world.doc['id']}", headers={"Accept": "application/json"})
        assert r.status_code == 503 and r.json()["error"] == "audit_unavailable"
        assert r.headers["Retry-After"] and world.content[:20].decode() not in r.text
    page = world.ipad.get("/docs/")
    assert page.status_code == 503 and "nhật ký truy cập tài liệu" in page.text
    assert "a row exists past the audit chain head" in caplog.text
    assert len(_alarms(world)) == 1  # one alarm, not one per request
    res = _cli(world, "audit-verify")
    assert res.exit_code == 2 and f"row {head_seq + 1} lies past the chain head" in res.output

    # After the officers examined it: quarantine, and the gateway works again.
    assert _cli(world, "audit-quarantine").exit_code == 1  # needs --confirm
    res = _cli(world, "audit-quarantine", "--confirm")
    assert res.exit_code == 0 and "1 row(s)" in res.output
    assert world.ipad.get(f"/docs/{world.doc['id']}").status_code == 200
    assert _status(world).ok
    with world.server.session() as s:
        assert s.execute(text("SELECT count(*) FROM gateway_audit_quarantine")).scalar() == 1
    # The append-only trigger is back.
    with world.server.instance.database.engine.begin() as conn:
        with pytest.raises(Exception, match="append-only"):
            conn.execute(text("DELETE FROM gateway_audit_events WHERE id = 1"))


def test_monthly_report_carries_the_checkpoint(world):
    from reports import service as reports_service

    _traffic(world, 2)
    assert _cli(world, "audit-checkpoint").exit_code == 0
    with world.server.session() as s:
        cp = s.scalars(select(AuditCheckpoint)).one()
    from ipad_mdm.db import utcnow
    from reports.periods import Month

    outputs = reports_service.build(world.server.instance.database, "monthly", str(Month.containing(utcnow())), "vi",
                                    ["html"])
    html = outputs["html"].decode()
    assert f"dòng số {cp.seq}, mã băm {cp.head_hash}" in html
