"""Shared fixtures: a real server over TLS on 127.0.0.1, a real APNs stand-in,
fresh databases (SQLite file or a new PostgreSQL database), the simulator."""
from __future__ import annotations

import os
import secrets
import ssl
import threading
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text

pytest_plugins = ["tests.conftest_softhsm"]

PG_ADMIN_URL = os.environ.get("IPAD_MDM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IPAD_MDM_TEST_REDIS", "redis://127.0.0.1:6379/15")
# One key prefix per test run: two runs sharing this Redis (and their Celery workers, which
# inherit the environment) never see each other's queues or results.
# Under pytest-xdist each worker gets its own prefix too (the run id is inherited, the worker id is not).
_RUN = os.environ.setdefault("IPAD_MDM_TEST_RUN", secrets.token_hex(4))
os.environ["IPAD_MDM_REDIS_KEY_PREFIX"] = f"ipad-mdm-test-{_RUN}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}:"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fresh_postgres_database():
    """A new, empty PostgreSQL database on the real server; dropped afterwards."""
    name = f"ipad_mdm_t_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite"])
def database_url(request, tmp_path):
    """SQLite by default; tests that must also run on PostgreSQL parametrize
    with `@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)`."""
    if request.param == "postgresql":
        with fresh_postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'ipad-mdm.sqlite3'}"


class SmtpInbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: the server's notifier delivers to it over
    SMTP exactly as to the office's mail relay, and tests read what arrived."""

    def __init__(self):
        from email import message_from_bytes, policy

        import threading

        self.messages = []
        self._lock = threading.Condition()
        inbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                msg = message_from_bytes(envelope.content, policy=policy.default)
                with inbox._lock:
                    inbox.messages.append(SimpleNamespace(
                        subject=str(msg["Subject"]), body=msg.get_content(), recipients=list(envelope.rcpt_tos),
                        sender=envelope.mail_from, raw=envelope.content))
                    inbox._lock.notify_all()
                return "250 OK"

        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    @property
    def sent(self):
        return list(self.messages)

    def wait_for(self, count: int, timeout: float = 30):
        """Mail is sent after commit on a background thread; wait for it (a bound, not a timing check)."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


@pytest.fixture
def notifier(monkeypatch):
    """E-mail through a real local SMTP server, as production sends it (no STARTTLS locally)."""
    from ipad_mdm.notify import set_notifier

    inbox = SmtpInbox()
    inbox.controller.start()
    for name, value in {"IPAD_MDM_SMTP_HOST": "127.0.0.1", "IPAD_MDM_SMTP_PORT": str(inbox.port),
                        "IPAD_MDM_SMTP_STARTTLS": "false", "IPAD_MDM_NOTIFY_FROM": "ipad-mdm@vpcp.gov.vn",
                        "IPAD_MDM_NOTIFY_TO": "attt@vpcp.gov.vn"}.items():
        monkeypatch.setenv(name, value)
    set_notifier(None)  # re-read the environment: the SMTP notifier
    yield inbox
    set_notifier(None)
    monkeypatch.undo()
    set_notifier(None)
    inbox.controller.stop()


@contextmanager
def serve_process(instance_dir: Path, database_url: str, **env_overrides):
    """A second, real `ipad-mdm serve` process on the same instance folder and database (how a
    deployment runs several processes); yields its base URL."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAD_MDM_")}
    env.update(DATABASE_URL=database_url, IPAD_MDM_BASE_URL=f"https://127.0.0.1:{port}", **env_overrides)
    exe = Path(sys.executable).parent / "ipad-mdm"
    proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--instance",
                             str(instance_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(instance_dir / "ca" / "ca.pem"))
    try:
        for _ in range(300):  # a bound for a process that never comes up, not a timing check
            if proc.poll() is not None:
                raise RuntimeError(f"ipad-mdm serve exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", verify=verify, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("ipad-mdm serve did not answer")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


BASELINE_POLICY = "Chính sách cơ sở / Baseline"


def retire_baseline_policy(officer) -> None:
    """Tests that check one policy's exact semantics first delete the shipped baseline policy
    (as a security officer could), so only their own policy applies."""
    r = officer.get("/api/v1/policies")
    assert r.status_code == 200, r.text
    for p in r.json()["policies"]:
        if p["name"] == BASELINE_POLICY:
            assert officer.delete(f"/api/v1/policies/{p['id']}").status_code == 200


class LiveServer:
    """The real WSGI app behind a real TLS socket, in a background thread."""

    def __init__(self, app, inst, httpd, apns):
        self.app = app
        self.instance = inst
        self.httpd = httpd
        self.apns = apns
        self.url = inst.settings.base_url
        self.ca_path = str(inst.settings.ca_dir / "ca.pem")

    @property
    def dispatcher(self):
        return self.app.extensions["ipad_mdm.dispatcher"]

    @property
    def hooks(self):
        return self.app.extensions["ipad_mdm.hooks"]

    @property
    def runtime(self):
        return self.app.extensions["ipad_mdm.runtime"]

    def session(self):
        return self.instance.database.session()

    def http(self, **kw):
        import httpx

        return httpx.Client(verify=ssl.create_default_context(cafile=self.ca_path), base_url=self.url, timeout=30, **kw)

    def simulator(self, **kw):
        from tests.simulator import SimulatedIPad

        return SimulatedIPad(self.url, verify=ssl.create_default_context(cafile=self.ca_path), **kw)

    def enrollment_url(self, **kw) -> str:
        from mdm import service

        with self.session() as s:
            return service.create_enrollment(s, self.instance.settings, **kw)["url"]

    def enroll_ipads(self, n: int) -> list:
        """n iPads enrolled over the protocol, their provisioning and pushes done."""
        sims = []
        for _ in range(n):
            sim = self.simulator()
            sim.enroll(self.enrollment_url())
            sims.append(sim)
        self.wait_pushes()
        return sims

    def api_token(self, role: str = "it_admin", name: str | None = None) -> str:
        from ipad_mdm.auth import create_api_token

        with self.session() as s:
            return create_api_token(s, name or f"test-{role}", role)

    def wait_pushes(self) -> None:
        self.dispatcher.wait_idle(timeout=30)


_TEMPLATE: dict = {}
_DB_TEMPLATES: dict = {}


def _migrated_template(kind: str) -> str:
    """A database migrated once per test process; live servers start from a copy of it (the
    migrations themselves are tested from scratch by test_migrations and every `serve`)."""
    if kind not in _DB_TEMPLATES:
        import atexit
        import tempfile

        from ipad_mdm.db import Database

        if kind == "sqlite":
            url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='ipad-mdm-dbtpl-')) / 'template.sqlite3'}"
        else:
            name = f"ipad_mdm_tpl_{secrets.token_hex(6)}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))

            def drop(name=name, admin=admin):
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                admin.dispose()

            atexit.register(drop)
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        db = Database(url)
        db.migrate()
        db.dispose()
        _DB_TEMPLATES[kind] = url
    return _DB_TEMPLATES[kind]


def start_from_template(database_url: str) -> None:
    """Fill a test's new, empty database with the migrated template (SQLite: copy the file;
    PostgreSQL: recreate it from the template database)."""
    import shutil

    if database_url.startswith("sqlite:///"):
        path = Path(database_url[len("sqlite:///"):])
        if not path.exists():
            shutil.copyfile(_migrated_template("sqlite")[len("sqlite:///"):], path)
        return
    name = database_url.rsplit("/", 1)[1]
    if not name.startswith("ipad_mdm_t_"):
        return
    probe = create_engine(database_url)
    with probe.connect() as conn:
        empty = conn.execute(text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")).scalar() == 0
    probe.dispose()
    if empty:
        template = _migrated_template("postgresql").rsplit("/", 1)[1]
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        admin.dispose()


def seed_instance_dir(instance_dir: Path) -> None:
    """Copy CA, keys and certificates made once per test session (RSA key
    generation dominates start-up); every test still gets its own database."""
    import shutil
    import tempfile

    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance

    if "dir" not in _TEMPLATE:
        tpl = Path(tempfile.mkdtemp(prefix="ipad-mdm-tpl-"))
        inst = open_instance(load_settings(tpl, database_url="sqlite://", base_url="https://127.0.0.1:8000"), migrate=False)
        inst.database.dispose()
        _TEMPLATE["dir"] = tpl
    tpl = _TEMPLATE["dir"]
    instance_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("ca", "secrets"):
        shutil.copytree(tpl / sub, instance_dir / sub, dirs_exist_ok=True)


def start_live_server(tmp_path: Path, database_url: str, *, apns_tls: bool = True, seed: bool = True,
                      tls: bool = True, dispatcher=None, **overrides):
    from werkzeug.serving import make_server

    from ipad_mdm.app import create_app
    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance
    from tests.apns_standin import start_apns_standin

    holder = {}

    def wsgi(environ, start_response):
        return holder["app"](environ, start_response)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) if tls else None
    httpd = make_server("127.0.0.1", 0, wsgi, threaded=True, ssl_context=ctx)
    port = httpd.server_port
    scheme = "https" if tls else "http"
    instance_dir = tmp_path / "instance"
    if seed:
        seed_instance_dir(instance_dir)
        start_from_template(database_url)
    settings = load_settings(instance_dir, database_url=database_url, base_url=f"{scheme}://127.0.0.1:{port}",
                             apns_max_attempts=2, **overrides)
    inst = open_instance(settings)
    if ctx is not None:
        ctx.load_cert_chain(str(inst.server_cert_path), str(inst.server_key_path))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=inst.ca.certificate_pem.decode())
    apns_cm = start_apns_standin(tls=apns_tls, expected_topic=inst.push_topic,
                                 client_ca_pem=inst.push_cert_path.read_bytes() if apns_tls else None)
    apns = apns_cm.__enter__()
    settings = settings.with_(apns_url=apns.url, apns_ca_file=getattr(apns, "server_ca_path", None))
    inst.settings = settings
    app = create_app(inst=inst, dispatcher=dispatcher)
    holder["app"] = app
    # shutdown() waits for the loop's next poll: 0.5 s by default, at every test's end.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server = LiveServer(app, inst, httpd, apns)

    def stop():
        if hasattr(app.extensions["ipad_mdm.dispatcher"], "close"):
            app.extensions["ipad_mdm.dispatcher"].close()
        httpd.shutdown()
        httpd.server_close()
        apns_cm.__exit__(None, None, None)
        inst.database.dispose()

    server.stop = stop
    return server


@pytest.fixture
def server(tmp_path, database_url):
    srv = start_live_server(tmp_path, database_url)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def enrolled(server):
    """A simulated iPad that has enrolled and answered its first inventory commands."""
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    yield sim
    sim.close()
