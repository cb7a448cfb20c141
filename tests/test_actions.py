"""Verdict actions report what really happened, failures are retried, access stays denied.

The VPN package carries out compliance's cut_vpn action. Here the cut fails (the VPN side
raises, as it would with its gateway unreachable or a bug): the transition records the
failure with its reason instead of "emitted", the device is still refused by the document
gateway, and the retry job applies the cut once it works again — off the request path.
"""
from __future__ import annotations

from sqlalchemy import select

import vpn
from compliance import VerdictTransition, jobs
from mdm.models import Device
from tests.conftest import retire_baseline_policy
from tests.test_vpn import config_peers, peer_row


def _transitions(server, udid):
    with server.session() as s:
        device_id = s.scalar(select(Device.id).where(Device.udid == udid))
        return list(s.scalars(select(VerdictTransition).where(VerdictTransition.device_id == device_id)
                              .order_by(VerdictTransition.id)))


def test_failed_vpn_cut_is_recorded_retried_and_access_stays_denied(server, enrolled, monkeypatch):
    officer = server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"})
    admin = server.http(headers={"Authorization": f"Bearer {server.api_token('it_admin')}"})
    retire_baseline_policy(officer)
    r = officer.post("/api/v1/policies", json={"name": "Mật mã", "rules": [{"kind": "passcode_present"}],
                                               "grace_hours": 0, "assign": {"all": True},
                                               "actions": ["cut_vpn", "block_gateway"]})
    assert r.status_code == 201, r.text
    public = peer_row(server, enrolled.udid).public_key
    assert public in config_peers(server)

    def unreachable(*args, **kwargs):
        raise RuntimeError("VPN gateway unreachable")

    monkeypatch.setattr(vpn, "cut_peers", unreachable)  # what the cut_vpn action calls
    enrolled.state.passcode_present = False
    admin.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "SecurityInfo"})
    enrolled.process_commands()

    last = _transitions(server, enrolled.udid)[-1]
    assert last.to_state == "non_compliant" and last.actions_pending is True
    cut = next(a for a in last.actions if a["action"] == "cut_vpn")
    assert cut["status"] == "failed" and "VPN gateway unreachable" in cut["detail"]
    assert peer_row(server, enrolled.udid).state == "active" and public in config_peers(server)
    verdict = admin.get(f"/api/v1/devices/{enrolled.udid}/verdict").json()
    assert verdict["state"] == "non_compliant" and verdict["document_access"] is False

    # Still failing: the job says so and keeps it pending.
    assert jobs.retry_actions(server.runtime)["failed"] == 1
    assert _transitions(server, enrolled.udid)[-1].actions_pending is True

    monkeypatch.undo()
    counts = jobs.retry_actions(server.runtime)
    assert counts["done"] == 1
    last = _transitions(server, enrolled.udid)[-1]
    cut = next(a for a in last.actions if a["action"] == "cut_vpn")
    assert (cut["status"], cut["result"], cut["attempts"]) == ("done", "cut", 3) and "detail" not in cut
    assert last.actions_pending is False
    assert peer_row(server, enrolled.udid).state == "cut"
    assert public not in config_peers(server)  # rewritten by the background task, not the job's thread

    # A failure that the device outgrew is closed as superseded, not retried forever.
    monkeypatch.setattr(vpn, "restore_peer", unreachable)
    enrolled.state.passcode_present = True
    admin.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "SecurityInfo"})
    enrolled.process_commands()
    assert _transitions(server, enrolled.udid)[-1].actions_pending is True
    enrolled.state.passcode_present = False
    admin.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "SecurityInfo"})
    enrolled.process_commands()
    assert jobs.retry_actions(server.runtime)["superseded"] == 1
    officer.close()
    admin.close()
