"""What one enrollment asks of the database (issue: fast paths, enrollment server cost).

Each statement is a round trip and, through the ORM, most of a request's CPU: an enrollment went
from 61 statements (profile 3, SCEP 6, Authenticate 8, TokenUpdate 44) to 42, then 36 (no "queued"
event rows: the command row records its queueing; a new VPN peer's address tried at the unique
index, not probed first; the VPN gateways told of the new peer by a background task), and a command answer that gets the next command in return is two
UPDATE … RETURNING, not a SELECT and an UPDATE each. These tests pin the
cuts by what they removed, on PostgreSQL, and check that the work those statements did is still
done (the token claimed once, the identity bound, the peer addressed and named by its command, the
transition with its actions, the handover record, the gateway's access state).
"""
from __future__ import annotations

import threading

import pytest
from cryptography.hazmat.primitives import hashes
from sqlalchemy import event, select

from compliance import DeviceVerdict, VerdictTransition
from console.models import DeviceRecord
from document_gateway.models import DeviceAccess
from mdm.models import Command, Device, EnrollmentToken, IdentityCertificate
from vpn.models import WireGuardPeer

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class RequestStatements:
    """Statements sent by the server's request threads (not its background tasks' threads)."""

    def __init__(self, engine):
        self.engine = engine
        self.current: list[str] = []
        event.listen(engine, "before_cursor_execute", self._execute)

    def _execute(self, conn, cursor, statement, params, context, executemany):
        if not threading.current_thread().name.startswith("ipad-mdm-task"):
            self.current.append(" ".join(statement.split()))

    def take(self) -> list[str]:
        out, self.current = self.current, []
        return out

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._execute)


def _count(statements, prefix: str) -> int:
    return sum(1 for s in statements if s.startswith(prefix))


def test_an_enrollment_makes_36_statements_and_still_does_its_work(server):
    sim = server.simulator()
    url = server.enrollment_url()
    log = RequestStatements(server.instance.database.engine)
    try:
        resp = sim.fetch_profile(url)
        assert resp.status_code == 200
        sim.install_enrollment_profile(resp.content)
        profile = log.take()
        sim.scep_enroll()
        server.wait_pushes()
        scep = log.take()
        assert sim.authenticate().status_code == 200
        server.wait_pushes()
        authenticate = log.take()
        assert sim.token_update().status_code == 200
        server.wait_pushes()
        token_update = log.take()
    finally:
        log.close()

    # The profile download claims its token in one conditional UPDATE … RETURNING.
    assert len(profile) == 1 and profile[0].startswith("UPDATE enrollment_tokens") and "RETURNING" in profile[0]
    # SCEP: the challenge claimed the same way; no SAVEPOINT around the renewal lookup.
    assert scep[0].startswith("UPDATE enrollment_tokens") and "RETURNING" in scep[0], scep
    assert _count(scep, "SAVEPOINT") == 0 and len(scep) <= 3, scep
    # Authenticate: the token is read once; the device is inserted with its current identity.
    assert _count(authenticate, "SELECT enrollment_tokens") == 1, authenticate
    assert _count(authenticate, "UPDATE devices") == 0 and len(authenticate) <= 6, authenticate
    # TokenUpdate: the peer is one INSERT with its address and its profile command's UUID, the
    # transition one INSERT with its actions, the verdict read once, the policies with their units
    # in one statement, the handover records once,
    # and nothing asked of ADE or ScheduleOSUpdate for an iPad that needs neither.
    assert _count(token_update, "INSERT INTO vpn_wireguard_peers") == 1, token_update
    assert _count(token_update, "UPDATE vpn_wireguard_peers") == 0, token_update
    assert _count(token_update, "UPDATE compliance_verdict_transitions") == 0, token_update
    assert _count(token_update, "SELECT compliance_device_verdicts") == 1, token_update
    assert _count(token_update, "SELECT console_device_records") == 1, token_update
    assert _count(token_update, "SELECT devices.id FROM devices WHERE devices.id") == 0, token_update  # no FOR UPDATE
    assert _count(token_update, "SELECT ddm_declarations") <= 1, token_update
    assert _count(token_update, "SELECT enrollment_tokens") == 0, token_update
    assert _count(token_update, "SELECT compliance_policy_units") == 0, token_update  # joined to the policies
    assert _count(token_update, "INSERT INTO command_events") == 0, token_update  # the rows say "queued"
    assert _count(token_update, "SELECT vpn_wireguard_peers.id FROM vpn_wireguard_peers WHERE "
                                "vpn_wireguard_peers.address_v4") == 0, token_update  # no probe first
    assert _count(token_update, "SELECT vpn_gateways") == 0, token_update  # the gateways hear of it in a task
    assert len(token_update) <= 26, token_update
    assert len(profile) + len(scep) + len(authenticate) + len(token_update) <= 36

    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.enrollment_state == "enrolled"
        identity = s.get(IdentityCertificate, device.current_identity_id)
        assert identity.device_id == device.id
        assert identity.sha256_fingerprint == sim.identity.fingerprint(hashes.SHA256()).hex()
        token = s.get(EnrollmentToken, device.enrollment_token_id)
        assert token.profile_fetched_at is not None and token.challenge_used_at is not None
        peer = s.scalar(select(WireGuardPeer).where(WireGuardPeer.device_id == device.id))
        assert peer.state == "active" and peer.address_v4 and peer.updated_at is not None
        command = s.scalar(select(Command).where(Command.uuid == peer.profile_command_uuid))
        assert command.request_type == "InstallProfile" and command.device_id == device.id
        verdict = s.get(DeviceVerdict, device.id)
        transition = s.scalar(select(VerdictTransition).where(VerdictTransition.device_id == device.id))
        assert transition.to_state == verdict.state and transition.trigger == "enrolled"
        assert any(a.get("action") == "verdict.changed" for a in transition.actions), transition.actions
        record = s.scalar(select(DeviceRecord).where(DeviceRecord.device_id == device.id))
        assert record.state == "enrolled"
        access = s.get(DeviceAccess, device.id)
        assert access.verdict_state == verdict.state


def test_a_claimed_token_or_challenge_is_refused_with_its_reason(server):
    """The one-statement claims still say why they refuse (the second statement, refusals only)."""
    from mdm import enrollment

    url = server.enrollment_url()
    plain = url.rsplit("/", 1)[-1].split("token=")[-1]
    with server.session() as s:
        _row, challenge = enrollment.redeem_token(s, plain)
    with server.session() as s:
        with pytest.raises(enrollment.EnrollmentRefused, match="already used"):
            enrollment.redeem_token(s, plain)
        with pytest.raises(enrollment.EnrollmentRefused, match="unknown"):
            enrollment.redeem_token(s, plain + "x")
    with server.session() as s:
        assert enrollment.consume_challenge(s, challenge).challenge_used_at is not None
    with server.session() as s:
        with pytest.raises(enrollment.ScepRefused, match="already used"):
            enrollment.consume_challenge(s, challenge)
        with pytest.raises(enrollment.ScepRefused, match="unknown"):
            enrollment.consume_challenge(s, challenge + "x")


def test_a_command_answer_and_the_next_command_are_two_updates_returning_the_rows(server):
    """An answered command and the claim of the next are each one UPDATE … RETURNING (no SELECT of
    the command first); the history still begins with the queueing, from the command row."""
    import plistlib

    from mdm.service import command_history

    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    first = plistlib.loads(sim.connect("Idle").content)
    log = RequestStatements(server.instance.database.engine)
    try:
        status, payload = sim.answer(first["Command"])
        assert status == "Acknowledged"
        second = plistlib.loads(sim.connect(status, first["CommandUUID"], **payload).content)
        answer = log.take()
    finally:
        log.close()
    assert second["CommandUUID"] != first["CommandUUID"]
    updates = [s for s in answer if s.startswith("UPDATE commands")]
    assert len(updates) == 2 and all("RETURNING" in s for s in updates), answer
    assert not [s for s in answer if s.startswith("SELECT commands.id, commands.uuid")], answer
    with server.session() as s:
        answered = s.scalar(select(Command).where(Command.uuid == first["CommandUUID"]))
        sent = s.scalar(select(Command).where(Command.uuid == second["CommandUUID"]))
        assert answered.status == "acknowledged" and answered.completed_at is not None
        assert sent.status == "sent" and sent.attempts == 1
        assert [h["status"] for h in command_history(answered)] == ["queued", "sent", "acknowledged"]
        assert command_history(answered)[0]["at"] is not None
    sim.close()
