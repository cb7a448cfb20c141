"""Periodic jobs really fire: the embedded scheduler (serve) and a real Celery beat + worker.

The job chosen is the push retry: APNs refuses the first push, the device stays push_pending,
and the scheduled mdm.retry_pushes delivers it without anyone calling the job by hand.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import redis
from sqlalchemy import select, update

from ipad_mdm.scheduler import EmbeddedScheduler
from mdm.models import Device
from tests.conftest import REDIS_URL, start_live_server

ROOT = Path(__file__).resolve().parent.parent


def _enroll_with_failed_push(server):
    server.apns.fail_next(10, 503, "ServiceUnavailable")
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.push_pending and device.push_failures >= 1
        # Time passes beyond the retry backoff (the push failed "a while ago").
        s.execute(update(Device).where(Device.id == device.id)
                  .values(last_push_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)))
    server.apns.clear_faults()  # APNs is healthy again
    return sim


def test_embedded_scheduler_retries_a_failed_push(server, monkeypatch):
    monkeypatch.setenv("IPAD_MDM_JOB_INTERVALS", "mdm.retry_pushes=1")
    sim = _enroll_with_failed_push(server)
    before = len(server.apns.pushes)
    scheduler = EmbeddedScheduler(server.app, tick_seconds=0.2)
    scheduler.start()
    try:
        pushes = server.apns.wait_for(before + 1, timeout=60)  # an upper bound, not a timing check
    finally:
        scheduler.stop()
    assert pushes[-1].token == sim.push_token.hex()
    server.wait_pushes()
    with server.session() as s:
        assert s.scalar(select(Device.push_pending).where(Device.udid == sim.udid)) is False


def test_celery_beat_fires_the_retry_job(tmp_path):
    """A real `celery beat` and `celery worker` on the real Redis, sharing the server's database."""
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    server = start_live_server(tmp_path, f"sqlite:///{tmp_path / 'shared.sqlite3'}")
    procs = []
    try:
        sim = _enroll_with_failed_push(server)
        before = len(server.apns.pushes)
        queue = f"ipad-mdm-beat-{uuid.uuid4().hex[:8]}"
        settings = server.instance.settings
        env = dict(os.environ, CELERY_BROKER_URL=REDIS_URL, IPAD_MDM_CELERY_QUEUE=queue,
                   DATABASE_URL=settings.database_url, IPAD_MDM_INSTANCE=str(settings.instance_dir),
                   IPAD_MDM_BASE_URL=settings.base_url, IPAD_MDM_APNS_URL=settings.apns_url,
                   IPAD_MDM_APNS_CA=settings.apns_ca_file or "", PYTHONPATH=str(ROOT),
                   IPAD_MDM_JOB_INTERVALS="mdm.retry_pushes=1")
        log = open(tmp_path / "celery.log", "wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=solo", "-Q", queue,
             "-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "beat", "--loglevel=INFO",
             "-s", str(tmp_path / "beat-schedule")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        try:
            pushes = server.apns.wait_for(before + 1, timeout=120)  # an upper bound for stuck processes
        except TimeoutError:
            print((tmp_path / "celery.log").read_text(errors="replace"))
            raise
        assert pushes[-1].token == sim.push_token.hex()
        text = (tmp_path / "celery.log").read_text(errors="replace")
        assert "ipad_mdm.run_periodic_job" in text and "Scheduler: Sending due task mdm.retry_pushes" in text
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        server.stop()
