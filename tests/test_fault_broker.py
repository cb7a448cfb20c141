"""Issue #22, item 1: the task queue (Redis, Celery's broker) unreachable, on the production stack.

The fault is real: gunicorn and the CLI get CELERY_BROKER_URL pointing at a closed port. Device
endpoints answer as usual (the push is deferred, not lost: push_pending stays in the database),
the API and the CLI say "queued; push deferred (queue unavailable)" with success and no traceback,
and when the queue is back the periodic sweep (Celery beat → worker) sends the push from the
database; the command is acknowledged exactly once."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest
from sqlalchemy import select

from mdm.models import Device
from tests.conftest import free_port
from tests.simulator import SimulatedIPad
from tests.test_production_stack import BIN, ROOT, _assert_each_acknowledged_once, open_stack


@pytest.fixture
def broken_queue_stack(tmp_path):
    with open_stack(tmp_path, worker=False, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0") as st:
        try:
            yield st  # nothing listens on that port: the queue is unreachable
        finally:
            if getattr(st, "beat", None) is not None:
                st.beat.terminate()
                st.beat.wait(timeout=30)


def test_queue_down_defers_pushes_and_the_sweep_sends_them(broken_queue_stack):
    stack = broken_queue_stack
    sim = SimulatedIPad(stack.url, verify=stack.verify)
    sim.enroll(stack.enrollment_url())  # TokenUpdate answered 200 although its push cannot be queued
    with stack.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.enrollment_state == "enrolled" and device.push_token
    sim.process_commands()

    # The CLI: queued, exit 0, no traceback, and the truth about the push.
    out = subprocess.run([str(BIN / "ipad-mdm"), "command", "send", sim.udid, "DeviceInformation", "--json",
                          "--param", 'Queries=["OSVersion"]'], env=stack.env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    sent = json.loads(out.stdout)
    assert sent["status"] == "queued" and sent["push"] == "deferred" and "Traceback" not in out.stderr
    assert "queue unavailable" in sent["push_note"]
    # The API: 201 with the same truth.
    token = json.loads(subprocess.run([str(BIN / "ipad-mdm"), "api-token", "create", "--name", "ops", "--role",
                                       "it_admin", "--json"], env=stack.env, check=True, capture_output=True,
                                      text=True).stdout)["token"]
    with httpx.Client(base_url=stack.url, verify=stack.verify, headers={"Authorization": f"Bearer {token}"}) as api:
        r = api.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "SecurityInfo"})
        assert r.status_code == 201 and r.json()["push"] == "deferred", r.text
        second = r.json()["command_uuid"] if "command_uuid" in r.json() else r.json()["uuid"]
    with stack.session() as s:
        assert s.scalar(select(Device.push_pending).where(Device.udid == sim.udid)) is True  # deferred, not lost
    assert not [p for p in stack.apns.pushes if p.token == sim.push_token.hex()][1:]

    # The queue is back: web restarted on the good broker, a worker and beat; the sweep pushes.
    stack.web.terminate()
    stack.web.wait(timeout=30)
    stack.env["CELERY_BROKER_URL"] = stack.good_broker
    stack.env["IPAD_MDM_JOB_INTERVALS"] = "mdm.retry_pushes=1"
    stack.start_web()
    stack.start_worker()
    stack.beat = subprocess.Popen([str(BIN / "celery"), "-A", "ipad_mdm.tasks", "beat", "--loglevel=INFO",
                                   "-s", str(stack.tmp / "beat-schedule")], cwd=ROOT, env=stack.env,
                                  stdout=open(stack.tmp / "beat.log", "ab"), stderr=subprocess.STDOUT)
    before = sum(1 for p in stack.apns.pushes if p.token == sim.push_token.hex())
    stack.apns.wait_for(before + 1, timeout=120)  # a bound for a sweep that never runs, not a timing check
    handled = sim.process_commands()
    assert {c["Command"]["RequestType"] for c in handled} >= {"DeviceInformation", "SecurityInfo"}
    _assert_each_acknowledged_once(stack, [sent["command_uuid"], second])
    web_log = (stack.tmp / "web.log").read_text()
    assert " 500 " not in web_log and "Traceback" not in web_log
    assert "task queue unavailable" in web_log
    sim.close()
