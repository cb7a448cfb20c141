"""Issue #22, item 2: PostgreSQL restarted under load, then a failover to a promoted standby, on the
production stack (gunicorn with three workers + a Celery worker + Redis) whose DATABASE_URL lists both
hosts with target_session_attrs=read-write.

The faults are real: the test makes its own primary and synchronous streaming standby (initdb,
pg_basebackup), stops the primary, starts it again, later kills it and promotes the standby. Device
requests during a gap answer 503 with Retry-After (never 500), succeed afterwards without restarting
gunicorn, and every command queued before the failover is acknowledged exactly once — including the
one a device held, unanswered, while the primary died."""
from __future__ import annotations

import json
import plistlib
import subprocess
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from mdm.models import Command, CommandEvent
from tests.pg_cluster import ReplicatedPostgres
from tests.simulator import SimulatedIPad
from tests.test_production_stack import (BIN, ROOT, _assert_each_acknowledged_once, _drain_concurrently, _queue,
                                         open_stack)


@pytest.fixture
def cluster():
    pg = ReplicatedPostgres().start()
    try:
        yield pg
    finally:
        pg.close()


class IdleLoad:
    """An iPad checking in over and over on its own connection, recording every answer."""

    def __init__(self, sim: SimulatedIPad):
        self.sim, self.answers, self.errors = sim, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        body = plistlib.dumps({"UDID": self.sim.udid, "Status": "Idle"})
        headers = {"Mdm-Signature": self.sim.sign(body)}
        with httpx.Client(verify=self.verify, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.put(self.sim.mdm_payload["ServerURL"], content=body, headers=headers)
                    self.answers.append((r.status_code, r.headers.get("Retry-After")))
                except httpx.TransportError as exc:  # gunicorn itself never goes away here
                    self.errors.append(type(exc).__name__)
                time.sleep(0.02)

    def start(self, verify):
        self.verify = verify
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=60)


def _until(check, what, attempts=300):
    """Retry until true; a bound for a stack that never recovers, not a timing check."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"never recovered: {what}")


def _acknowledged(stack, uuids) -> int:
    with stack.session() as s:
        return s.scalar(select(func.count(CommandEvent.id)).join(Command, Command.id == CommandEvent.command_id)
                        .where(Command.uuid.in_(uuids), CommandEvent.status == "acknowledged")) or 0


def test_primary_restart_and_failover_lose_nothing(cluster, tmp_path):
    assert cluster.replication_state() == "sync"
    with open_stack(tmp_path, database_url=cluster.url, IPAD_MDM_COMMAND_RESEND_SECONDS="2") as stack:
        web_pid = stack.web.pid
        device, loader = (SimulatedIPad(stack.url, verify=stack.verify) for _ in range(2))
        for sim in (device, loader):
            sim.enroll(stack.enrollment_url())
            stack.wait_provisioned(sim)
            sim.process_commands()
        load = IdleLoad(loader).start(stack.verify)

        # --- the primary stops and starts again (a restart for maintenance) ---------------------------
        cluster.stop_primary()
        gap = device.connect()
        assert gap.status_code == 503 and int(gap.headers["Retry-After"]) > 0, gap.text
        refused = httpx.get(f"{stack.url}/healthz", verify=stack.verify)
        assert refused.status_code == 503
        cluster.start_primary()
        _until(lambda: device.connect().status_code == 200, "check-in after the restart")

        # --- commands queued, one in the device's hands, then the primary dies and the standby takes over
        uuids = _queue(stack, device.udid, 20)
        first = device.connect()
        assert first.status_code == 200
        cmd = plistlib.loads(first.content)
        status, payload = device.answer(cmd["Command"])
        held = device.connect(status, cmd["CommandUUID"], **payload)  # acknowledged; the next one comes back
        assert held.status_code == 200 and plistlib.loads(held.content)["CommandUUID"] in uuids
        cluster.fail_over()
        stack.engine.dispose()  # the test's own pool: its connections were to the old primary
        gap = device.connect()
        assert gap.status_code in (200, 503), gap.text  # 200 once libpq has found the promoted standby
        # The device never answered the command it held: it is offered again once RESEND_AFTER (2 s
        # here) has passed; each command is acknowledged once.
        _drain_concurrently(device, stack.verify, threads=4, tolerate_errors=True)
        _until(lambda: _drain_concurrently(device, stack.verify, threads=2, tolerate_errors=True) is not None
               and _acknowledged(stack, uuids) == len(uuids), "the held command offered again", attempts=100)
        _assert_each_acknowledged_once(stack, uuids)
        assert _acknowledged(stack, uuids) == len(uuids)

        # --- after the failover: writes go to the promoted standby; the worker pushes from it too ------
        pushes_before = len(stack.apns.pushes)
        out = subprocess.run([str(BIN / "ipad-mdm"), "command", "send", device.udid, "SecurityInfo", "--json"],
                             env=stack.env, capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        after = json.loads(out.stdout)["command_uuid"]
        stack.apns.wait_for(pushes_before + 1, timeout=60)  # a bound for a worker that never recovers
        device.process_commands()
        _assert_each_acknowledged_once(stack, [after])
        assert cluster.psql(1, "SELECT pg_is_in_recovery()") == "f"

        load.stop()
        statuses = {code for code, _ in load.answers}
        assert statuses <= {200, 503} and 200 in statuses, statuses
        assert all(retry for code, retry in load.answers if code == 503)
        assert load.answers[-1][0] == 200 and not load.errors
        assert stack.web.poll() is None and stack.web.pid == web_pid  # the pool recovered, no restart
        web_log = (stack.tmp / "web.log").read_text()
        assert " 500 " not in web_log and "Traceback" not in web_log
        assert "database temporarily unavailable" in web_log or "database error" in web_log
        for sim in (device, loader):
            sim.close()
