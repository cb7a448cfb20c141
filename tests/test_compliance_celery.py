"""A real Celery worker (subprocess, --pool=solo) on the real Redis evaluates a
device in the database it shares with the live server (a SQLite file)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from compliance.models import DeviceVerdict, VerdictTransition
from ipad_mdm.celery_app import make_celery
from ipad_mdm.tasks import beat_schedule
from mdm.models import Device
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_url():
    # scripts/test starts Redis when it is down; an unreachable Redis is a failure, not a skip.
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    return REDIS_URL


@pytest.fixture
def worker(server, redis_url, tmp_path):
    # A private queue: other test runs sharing this Redis database never steal our tasks.
    queue = f"ipad-mdm-test-{uuid.uuid4().hex[:8]}"
    settings = server.instance.settings
    env = dict(os.environ, CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url,
               IPAD_MDM_CELERY_QUEUE=queue, DATABASE_URL=settings.database_url,
               IPAD_MDM_INSTANCE=str(settings.instance_dir), IPAD_MDM_BASE_URL=settings.base_url,
               PYTHONPATH=str(ROOT))
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=solo", "-Q", queue,
             "-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = make_celery(redis_url, redis_url)
    try:
        yield client, queue, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        client.close()


def test_celery_worker_evaluates_device(server, enrolled, worker):
    client, queue, log_path = worker
    officer = server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"})
    r = officer.post("/api/v1/policies", json={"name": "iPadOS 19", "assign": {"all": True}, "grace_hours": 24,
                                               "rules": [{"kind": "min_os_version", "version": "19.0"}]})
    assert r.status_code == 201, r.text
    officer.close()
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == enrolled.udid))
        assert s.get(DeviceVerdict, device.id).state == "compliant"  # policy not applied yet

    # The worker builds its runtime when it starts, not in its first task (which a push may be).
    for _ in range(1200):  # an upper bound for a stuck worker, not a timing assertion
        if "worker runtime ready" in log_path.read_text(errors="replace"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker did not build its runtime at start:\n" + log_path.read_text(errors="replace"))
    assert "received" not in log_path.read_text(errors="replace")  # no task has run yet

    result = client.send_task("compliance.evaluate_device", args=[device.id], queue=queue)
    try:
        out = result.get(timeout=120)  # an upper bound for a stuck worker, not a timing assertion
    except Exception:
        print(log_path.read_text(errors="replace"))
        raise
    assert out == {"device_id": device.id, "state": "grace", "transitions": ["grace"]}

    with server.session() as s:
        verdict = s.get(DeviceVerdict, device.id)
        assert verdict.state == "grace"
        assert verdict.reasons_en == ["iPadOS 18.1 is below the minimum 19.0"]
        last = s.scalars(select(VerdictTransition).where(VerdictTransition.device_id == device.id)
                         .order_by(VerdictTransition.id.desc())).first()
        assert (last.from_state, last.to_state, last.trigger) == ("compliant", "grace", "task")

    # The periodic-job runner beat uses works in the worker too.
    counts = client.send_task("ipad_mdm.run_periodic_job", args=["compliance.evaluate_all"], queue=queue).get(timeout=120)
    assert counts["evaluated"] == 1 and counts["errors"] == 0


def test_beat_schedule_covers_every_periodic_job():
    schedule = beat_schedule()
    assert schedule["compliance.evaluate_all"]["schedule"] == 300.0
    assert schedule["compliance.request_inventory"]["args"] == ("compliance.request_inventory",)
    assert "mdm.retry_pushes" in schedule
    assert all(e["task"] == "ipad_mdm.run_periodic_job" for e in schedule.values())


def test_pushes_go_through_celery_workers(tmp_path, redis_url):
    """Production path: the web process hands pushes to a Celery worker, which talks to APNs."""
    from ipad_mdm.dispatch import CeleryDispatcher
    from tests.conftest import start_live_server

    queue = f"ipad-mdm-test-{uuid.uuid4().hex[:8]}"
    client = make_celery(redis_url, redis_url)
    server = start_live_server(tmp_path, f"sqlite:///{tmp_path / 'shared.sqlite3'}",
                               dispatcher=CeleryDispatcher(client, queue))
    settings = server.instance.settings
    env = dict(os.environ, CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url,
               IPAD_MDM_CELERY_QUEUE=queue, DATABASE_URL=settings.database_url,
               IPAD_MDM_INSTANCE=str(settings.instance_dir), IPAD_MDM_BASE_URL=settings.base_url,
               IPAD_MDM_APNS_URL=settings.apns_url, IPAD_MDM_APNS_CA=settings.apns_ca_file or "",
               PYTHONPATH=str(ROOT))
    log_path = tmp_path / "push-worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=solo", "-Q", queue,
             "-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        sim = server.simulator()
        sim.enroll(server.enrollment_url())  # TokenUpdate -> push task -> worker -> APNs stand-in
        try:
            push = server.apns.wait_for(1, timeout=120)[0]  # upper bound for a stuck worker, not a timing check
        except TimeoutError:
            print(log_path.read_text(errors="replace"))
            raise
        assert push.token == sim.push_token.hex() and push.magic == sim.push_magic
        worker_log = log_path.read_text(errors="replace")
        # The TokenUpdate's commit asked for several tasks (push, outbox, VPN gateways): one message.
        assert "ipad_mdm.run_batch" in worker_log and "running mdm.send_pushes (batched)" in worker_log
        handled = sim.process_commands()
        assert handled[0]["Command"]["RequestType"] == "DeviceInformation"
        sim.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.stop()
        client.close()
