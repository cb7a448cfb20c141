"""What one enrollment asks of the database (issue: fast paths, enrollment server cost).

Each statement is a round trip and, through the ORM, most of a request's CPU: an enrollment went
from 61 statements (profile 3, SCEP 6, Authenticate 8, TokenUpdate 44) to 42, then 36 (no "queued"
event rows: the command row records its queueing; a new VPN peer's address tried at the unique
index, not probed first; the VPN gateways told of the new peer by a background task). Then what the
other packages do for a new iPad left the iPad's requests for a background pass (mdm.provisioning):
the requests make 14 statements, the pass 26 for one iPad (24 per iPad and 2 per pass). A command answer that gets the next command in return
is two UPDATE … RETURNING, not a SELECT and an UPDATE each. These tests pin the
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


_provisioning = threading.local()


@pytest.fixture
def watched_provisioning(monkeypatch):
    """Marks the thread running a provisioning pass (mdm.provisioning), so its statements are told
    apart from those of the other background tasks (pushes, the VPN gateways' task)."""
    from mdm import provisioning

    real = provisioning._pass

    def watched(*args, **kw):
        _provisioning.on = True
        try:
            return real(*args, **kw)
        finally:
            _provisioning.on = False

    monkeypatch.setattr(provisioning, "_pass", watched)


class RequestStatements:
    """Statements sent by the server's request threads, and apart those of the provisioning passes
    of new enrollments (mdm.provisioning, a background task)."""

    def __init__(self, engine):
        self.engine = engine
        self.current: list[str] = []
        self.tasks: list[str] = []
        event.listen(engine, "before_cursor_execute", self._execute)

    def _execute(self, conn, cursor, statement, params, context, executemany):
        if getattr(_provisioning, "on", False):
            self.tasks.append(" ".join(statement.split()))
        elif not threading.current_thread().name.startswith("ipad-mdm-task"):
            self.current.append(" ".join(statement.split()))

    def take(self) -> list[str]:
        out, self.current = self.current, []
        return out

    def take_tasks(self) -> list[str]:
        out, self.tasks = self.tasks, []
        return out

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._execute)


def _count(statements, prefix: str) -> int:
    return sum(1 for s in statements if s.startswith(prefix))


def test_an_enrollment_request_makes_14_statements_and_its_provisioning_does_the_rest(server, watched_provisioning):
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
        assert log.take_tasks() == []  # nothing to provision before the TokenUpdate
        assert sim.token_update().status_code == 200
        token_update = log.take()
        server.wait_pushes()
        provisioning = log.take_tasks()
        assert log.take() == []
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
    # TokenUpdate: the device row (marked for provisioning), the five inventory queries in one INSERT
    # and the check-in event; what the other packages do for a new iPad is not in the iPad's request.
    assert [st for st in token_update if st.startswith("UPDATE devices SET") and "provision_pending" in st], token_update
    assert _count(token_update, "UPDATE devices SET") == 1, token_update
    assert _count(token_update, "INSERT INTO commands") == 1, token_update
    for moved in ("vpn_wireguard_peers", "compliance_", "console_", "gateway_", "FROM ddm_", "INTO ddm_", "SAVEPOINT"):
        assert not [st for st in token_update if moved in st], (moved, token_update)
    assert len(token_update) <= 4, token_update
    assert len(profile) + len(scep) + len(authenticate) + len(token_update) <= 14

    # The provisioning pass (a background task): the mark claimed in one UPDATE … RETURNING; the peer
    # is one INSERT with its address and its profile command's UUID, the transition one INSERT with
    # its actions, the verdict read once, the policies with their units in one statement, the
    # handover records once, and nothing asked of ADE or ScheduleOSUpdate for an iPad that needs neither.
    assert provisioning[0].startswith("UPDATE devices SET provision_pending") and "RETURNING" in provisioning[0]
    assert "SKIP LOCKED" in provisioning[0], provisioning[0]
    assert _count(provisioning, "INSERT INTO vpn_wireguard_peers") == 1, provisioning
    assert _count(provisioning, "UPDATE vpn_wireguard_peers") == 0, provisioning
    assert _count(provisioning, "UPDATE compliance_verdict_transitions") == 0, provisioning
    assert _count(provisioning, "SELECT compliance_device_verdicts") == 1, provisioning
    assert _count(provisioning, "SELECT console_device_records") == 1, provisioning
    assert _count(provisioning, "SELECT devices.id FROM devices WHERE devices.id") == 0, provisioning  # claimed, locked
    assert _count(provisioning, "SELECT ddm_declarations") <= 1, provisioning
    assert _count(provisioning, "SELECT enrollment_tokens") == 0, provisioning
    assert _count(provisioning, "SELECT compliance_policy_units") == 0, provisioning  # joined to the policies
    assert _count(provisioning, "INSERT INTO command_events") == 0, provisioning  # the rows say "queued"
    assert _count(provisioning, "SELECT vpn_wireguard_peers.id FROM vpn_wireguard_peers WHERE "
                                "vpn_wireguard_peers.address_v4") == 0, provisioning  # no probe first
    assert _count(provisioning, "SELECT vpn_gateways") == 0, provisioning  # the gateways hear of it in a task
    assert len(provisioning) <= 26, provisioning  # two of them the SAVEPOINT of the batch's verdicts, once per pass

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
