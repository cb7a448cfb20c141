"""The production path: gunicorn with several workers + PostgreSQL + Redis + a Celery
worker, and what happens when parts of it fail.

Invariant checked after every fault: each queued command is acknowledged exactly
once and nothing stored is lost.
"""
from __future__ import annotations

import datetime as dt
import os
import plistlib
import signal
import ssl
import subprocess
import sys
import secrets
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID
import pytest
import redis
from sqlalchemy import create_engine, select, text, update

from mdm import service
from mdm.models import Command, CommandEvent, Device
from tests.apns_standin import start_apns_standin
from tests.conftest import PG_ADMIN_URL, REDIS_URL, free_port, fresh_postgres_database, seed_instance_dir
from tests.simulator import SimulatedIPad
from tests.webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
            except (OSError, IndexError):
                pass
    return kids


class Stack:
    def __init__(self, tmp_path: Path, database_url: str, apns, env: dict | None = None, prepare=None):
        self.tmp = tmp_path
        self.instance_dir = tmp_path / "instance"
        seed_instance_dir(self.instance_dir)
        if prepare is not None:
            prepare(self.instance_dir)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.queue = f"ipad-mdm-stack-{uuid.uuid4().hex[:8]}"
        self.apns = apns
        self.env = dict(
            os.environ,
            DATABASE_URL=database_url,
            IPAD_MDM_INSTANCE=str(self.instance_dir),
            IPAD_MDM_BASE_URL=self.url,
            CELERY_BROKER_URL=REDIS_URL,
            IPAD_MDM_CELERY_QUEUE=self.queue,
            IPAD_MDM_APNS_URL=apns.url,
            IPAD_MDM_APNS_CA=apns.server_ca_path,
            IPAD_MDM_BIND=f"127.0.0.1:{self.port}",
            IPAD_MDM_WORKERS="3",
            IPAD_MDM_TLS_CERT=str(self.instance_dir / "ca" / "server.pem"),
            IPAD_MDM_TLS_KEY=str(self.instance_dir / "secrets" / "server.key"),
            PYTHONPATH=str(ROOT),
        )
        self.good_broker = REDIS_URL
        self.env.update(env or {})
        subprocess.run([str(BIN / "ipad-mdm"), "db", "upgrade"], env=self.env, check=True, capture_output=True)
        self.verify = ssl.create_default_context(cafile=str(self.instance_dir / "ca" / "ca.pem"))
        self.web = None
        self.worker = None
        self.engine = create_engine(database_url)

    def start_web(self):
        self.web = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                                     "ipad_mdm.wsgi:app"], cwd=ROOT, env=self.env,
                                    stdout=open(self.tmp / "web.log", "ab"), stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz", verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError((self.tmp / "web.log").read_text())

    def kill_web(self):
        for pid in _children(self.web.pid):
            os.kill(pid, signal.SIGKILL)
        self.web.send_signal(signal.SIGKILL)
        self.web.wait()

    def start_worker(self):
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=solo", "-Q", self.queue,
             "-n", f"{self.queue}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO"],
            cwd=ROOT, env=self.env, stdout=open(self.tmp / "worker.log", "ab"), stderr=subprocess.STDOUT)

    def enrollment_url(self) -> str:
        out = subprocess.run([str(BIN / "ipad-mdm"), "enroll-token", "create", "--json"], env=self.env,
                             check=True, capture_output=True, text=True).stdout
        import json

        return json.loads(out)["url"]

    def session(self):
        from sqlalchemy.orm import Session

        return Session(self.engine)

    def wait_provisioned(self, sim, timeout: float = 120) -> None:
        """Until the worker has provisioned this new enrollment (mdm.provisioning: its VPN profile, first
        verdict, …), as the iPad would find on the push that follows. A bound, not a timing check."""
        deadline = time.monotonic() + timeout
        while True:
            with self.session() as s:
                device = s.scalar(select(Device).where(Device.udid == sim.udid))
                if device is not None and device.enrollment_state == "enrolled" and not device.provision_pending:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sim.udid} was not provisioned within {timeout} s")
            time.sleep(0.05)

    def stop(self):
        for proc in (self.web, self.worker):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.engine.dispose()


@contextmanager
def open_stack(tmp_path, *, worker: bool = True, prepare=None, apns_client_ca: bytes | None = None,
               apns_topic: str | None = None, database_url: str | None = None, **env):
    """The production stack on a fresh PostgreSQL database; `env` overrides the processes' environment
    (a fault test points CELERY_BROKER_URL at a closed port); `prepare(instance_dir)` runs before the
    first command opens the instance; `apns_client_ca`/`apns_topic`: the push CA and topic the APNs
    stand-in checks, when the test installs push certificates of its own; `database_url`: a database the
    test made itself (a replicated cluster) instead of a fresh one on the machine's PostgreSQL."""
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    # The stand-in checks what Apple checks: the push certificate as TLS client certificate, and
    # the topic it carries.
    seed_instance_dir(tmp_path / "instance")
    push_pem = (tmp_path / "instance" / "ca" / "push.pem").read_bytes()
    topic = x509.load_pem_x509_certificate(push_pem).subject.get_attributes_for_oid(NameOID.USER_ID)[0].value
    with (nullcontext(database_url) if database_url else fresh_postgres_database()) as url, start_apns_standin(tls=True, expected_topic=apns_topic or topic,
                                                              client_ca_pem=apns_client_ca or push_pem) as apns:
        st = Stack(tmp_path, url, apns, env, prepare)
        try:
            st.start_web()
            if worker:
                st.start_worker()
            yield st
        finally:
            st.stop()


@pytest.fixture
def stack(tmp_path):
    with open_stack(tmp_path) as st:
        yield st


def _queue(stack: Stack, udid: str, n: int) -> list[str]:
    from ipad_mdm.db import Database

    db = Database(stack.env["DATABASE_URL"])
    try:
        with db.session() as s:
            return [service.send_command(s, udid, "DeviceInformation", requested_by="test").uuid for _ in range(n)]
    finally:
        db.dispose()


def _drain_concurrently(sim: SimulatedIPad, verify, threads: int = 6, tolerate_errors: bool = False) -> list[str]:
    """Several connections for one device at once, like retries spread over workers."""
    delivered, failures, lock = [], [], threading.Lock()

    def put(client, message):
        body = plistlib.dumps(message)
        return client.put(sim.mdm_payload["ServerURL"], content=body, headers={"Mdm-Signature": sim.sign(body)})

    def worker():
        # Failures are collected and asserted in the test's own thread (an assert in a thread
        # would only print a warning).
        try:
            with httpx.Client(verify=verify, timeout=60) as client:
                for _attempt in range(50):
                    try:
                        r = put(client, {"UDID": sim.udid, "Status": "Idle"})
                        while r.status_code == 200 and r.content:
                            cmd = plistlib.loads(r.content)
                            with lock:
                                delivered.append(cmd["CommandUUID"])
                            status, payload = sim.answer(cmd["Command"])
                            r = put(client, {"UDID": sim.udid, "Status": status, "CommandUUID": cmd["CommandUUID"],
                                             **payload})
                        if r.status_code == 200:
                            return
                        if not (tolerate_errors and r.status_code in (502, 503)):
                            raise AssertionError(f"unexpected answer {r.status_code}: {r.text[:200]}")
                    except httpx.TransportError:
                        if not tolerate_errors:
                            raise
                    time.sleep(0.2)  # a device backs off before retrying; not a timing assertion
                raise AssertionError("the device never got an empty answer after 50 attempts")
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
            with lock:
                failures.append(exc)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)  # a bound for a hung server, not a timing check
    assert [t for t in ts if t.is_alive()] == [], "a device connection hung"
    assert failures == [], failures
    return delivered


def _age_unanswered(stack: Stack) -> None:
    """Move the clock of unanswered commands past the resend delay (time passing)."""
    with stack.session() as s:
        s.execute(update(Command).where(Command.status == "sent")
                  .values(sent_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)))
        s.commit()


def _assert_each_acknowledged_once(stack: Stack, uuids: list[str]):
    with stack.session() as s:
        rows = list(s.scalars(select(Command).where(Command.uuid.in_(uuids))))
        assert len(rows) == len(uuids)
        stuck = [(r.uuid, r.status, r.sent_at, [(e.status, e.at, e.detail) for e in r.events]) for r in rows if r.status != "acknowledged"]
        assert stuck == []
        assert {r.status for r in rows} == {"acknowledged"}
        acks = Counter(s.scalars(select(Command.uuid).join(CommandEvent, CommandEvent.command_id == Command.id)
                                 .where(Command.uuid.in_(uuids), CommandEvent.status == "acknowledged")))
        assert set(acks.values()) == {1}


def test_production_stack_survives_faults(stack):
    # The document system's webhook receiver: events go out through the Celery worker.
    secret = secrets.token_urlsafe(32)
    receiver = Receiver(secret)
    secret_file = stack.tmp / "webhook.secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    subprocess.run([str(BIN / "ipad-mdm"), "webhook", "add", "van-ban", receiver.url, "--secret-file", str(secret_file)],
                   env=stack.env, check=True, capture_output=True)
    # Enroll through gunicorn; the TokenUpdate push goes through the Celery worker to APNs.
    sim = SimulatedIPad(stack.url, verify=stack.verify)
    sim.enroll(stack.enrollment_url())
    push = stack.apns.wait_for(1, timeout=120)[0]  # upper bound for a stuck worker, not a timing check
    assert push.token == sim.push_token.hex()
    stack.wait_provisioned(sim)
    sim.process_commands()
    events = receiver.wait_for(lambda ev: "device.enrolled" in [e["type"] for e in ev], timeout=120)
    assert [e["data"]["udid"] for e in events if e["type"] == "device.enrolled"] == [sim.udid]
    assert "outbox.pump" in (stack.tmp / "worker.log").read_text()  # delivered by the Celery worker
    receiver.close()

    # 1. Several gunicorn workers, concurrent connections for one device: exactly once.
    first = _queue(stack, sim.udid, 30)
    delivered = _drain_concurrently(sim, stack.verify)
    assert [u for u, n in Counter(delivered).items() if n > 1] == []
    _assert_each_acknowledged_once(stack, first)

    # 2. A gunicorn worker killed while requests are in flight: the master replaces it,
    #    devices retry, nothing is lost or applied twice.
    second = _queue(stack, sim.udid, 30)
    killer = threading.Timer(0.3, lambda: [os.kill(p, signal.SIGKILL) for p in _children(stack.web.pid)[:1]])
    killer.start()
    _drain_concurrently(sim, stack.verify, tolerate_errors=True)
    killer.join()
    # A command whose answer died with the worker stays `sent`; the device's next
    # check-in after the resend delay gets it again. Let that time pass.
    _age_unanswered(stack)
    _drain_concurrently(sim, stack.verify, threads=1)
    _assert_each_acknowledged_once(stack, second)

    # 3. The whole server dies after handing out a command the device never answered;
    #    after a restart the device gets it again and it is acknowledged once.
    third = _queue(stack, sim.udid, 3)
    r = sim.connect("Idle")
    handed_out = plistlib.loads(r.content)["CommandUUID"]
    stack.kill_web()
    stack.start_web()
    _age_unanswered(stack)  # the device reconnects later
    again = sim.process_commands()
    assert handed_out in [c["CommandUUID"] for c in again]
    _assert_each_acknowledged_once(stack, third)

    # 4. The database refuses connections for a moment: clear 503s, no 500s, then recovery.
    fourth = _queue(stack, sim.udid, 5)
    db_name = stack.env["DATABASE_URL"].rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS false'))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": db_name})
    stack.engine.dispose()
    try:
        statuses = {sim.connect("Idle").status_code for _ in range(6)}
        assert statuses <= {503}, statuses
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    _drain_concurrently(sim, stack.verify, threads=2, tolerate_errors=True)
    _assert_each_acknowledged_once(stack, fourth)

    assert " 500 " not in (stack.tmp / "web.log").read_text()
    sim.close()
