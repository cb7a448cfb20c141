"""Issue #19: the VPN gateway on its own host. Two app processes change peers while the gateway's
agent is down and while it runs; the agent (no database access) consumes its own queue on the real
Redis, applies the changes in order, converges after a restart, and the server records what each
gateway applied. A report not sealed with the gateway's key is refused."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import select

from ipad_mdm.celery_app import make_celery
from mdm.models import Device
from tests.conftest import REDIS_URL
from vpn.gateways import REPORT_TASK
from vpn.models import VpnGateway, VpnTunnelSighting, WireGuardPeer
from vpn.serverconf import peers_in_config_text

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _wait(predicate, what: str, log: Path | None = None, bound: float = 120.0):
    """Poll until true; the bound only stops a stuck run (not a timing check)."""
    end = time.monotonic() + bound
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"never happened: {what}\n{log.read_text(errors='replace')[-3000:] if log else ''}")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_gateway_agent_applies_in_order_converges_and_reports(server, tmp_path):
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    server.instance.settings.extra["vpn_auto_provision"] = "false"
    run_id = uuid.uuid4().hex[:8]
    settings = server.instance.settings
    broker = dict(CELERY_BROKER_URL=REDIS_URL, IPAD_MDM_CELERY_QUEUE=f"ipad-mdm-gw-{run_id}",
                  IPAD_MDM_REDIS_KEY_PREFIX=f"t-{run_id}:", PYTHONPATH=str(ROOT))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("IPAD_MDM_", "CELERY_")) and k != "DATABASE_URL"}
    app_env = dict(base_env, **broker, DATABASE_URL=settings.database_url, IPAD_MDM_INSTANCE=str(settings.instance_dir),
                   IPAD_MDM_VPN_AUTO_PROVISION="false")
    agent_env = dict(base_env, **broker)  # the gateway host: the broker and its key, no database
    gw_host = tmp_path / "gateway-host"
    key_file = gw_host / "gw1.key"

    def cli(*args, env=app_env):
        proc = subprocess.run([str(BIN / "ipad-mdm"), *args], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stdout, proc.stderr)
        return proc.stdout

    out = json.loads(cli("vpn", "gateway", "add", "gw1", "--key-file", str(key_file)))
    assert out["queue"] == "vpn-gw.gw1" and "key" not in out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE(gw_host.stat().st_mode) == 0o700

    udids = [str(uuid.uuid4()).upper() for _ in range(6)]
    with server.session() as s:
        s.add_all([Device(udid=u, enrollment_state="enrolled") for u in udids])

    def two_app_processes(first: str, second: str):
        """Two app processes at once, each a shell running CLI commands in turn."""
        procs = [subprocess.Popen(["bash", "-c", script.replace("ipad-mdm", str(BIN / "ipad-mdm"))], env=app_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for script in (first, second)]
        for p in procs:
            outp, errp = p.communicate(timeout=300)
            assert p.returncode == 0, (outp, errp)

    # The gateway is down: the changes wait in its queue.
    two_app_processes(f"ipad-mdm vpn provision {udids[0]} && ipad-mdm vpn provision {udids[1]}",
                      f"ipad-mdm vpn provision {udids[2]} && ipad-mdm vpn provision {udids[3]}")

    worker_log, agent_log = tmp_path / "worker.log", tmp_path / "agent.log"
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=solo",
                               "-Q", broker["IPAD_MDM_CELERY_QUEUE"], "-n", f"app-{run_id}@%h", "--without-gossip",
                               "--without-mingle", "--loglevel=INFO"], cwd=ROOT, env=app_env,
                              stdout=open(worker_log, "wb"), stderr=subprocess.STDOUT)
    state_dir = gw_host / "state"

    def start_agent():
        return subprocess.Popen([str(BIN / "ipad-mdm"), "vpn", "agent", "--gateway", "gw1", "--key-file", str(key_file),
                                 "--state-dir", str(state_dir), "--apply", "file", "--report-every", "5"],
                                cwd=gw_host, env=agent_env, stdout=open(agent_log, "ab"), stderr=subprocess.STDOUT)

    def active_peers() -> dict[str, str]:
        with server.session() as s:
            f = server.instance.fernet()
            return {k: f.decrypt(p.encode()).decode() for k, p in s.execute(
                select(WireGuardPeer.public_key, WireGuardPeer.preshared_key_enc).where(WireGuardPeer.state == "active"))}

    def gateway_row() -> VpnGateway:
        with server.session() as s:
            return s.scalar(select(VpnGateway).where(VpnGateway.name == "gw1"))

    def converged():
        row, want = gateway_row(), active_peers()
        conf = state_dir / "peers.conf"
        if row.applied_seq != row.desired_seq or row.applied_peers != len(want) or not conf.exists():
            return False
        have = peers_in_config_text(conf.read_text())
        return {k: v["PresharedKey"] for k, v in have.items()} == want

    agent = start_agent()
    try:
        _wait(converged, "the agent applied the four queued peers", agent_log)
        assert len(active_peers()) == 4
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((state_dir / "peers.conf").stat().st_mode) == 0o600
        # While it runs: two processes cut and provision at once.
        two_app_processes(f"ipad-mdm vpn cut {udids[0]} --reason test && ipad-mdm vpn cut {udids[1]} --reason test",
                          f"ipad-mdm vpn provision {udids[4]} && ipad-mdm vpn provision {udids[5]}")
        _wait(converged, "the agent followed concurrent changes", agent_log)
        assert len(active_peers()) == 4
        # Down again; a change meanwhile; back up: it converges.
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        cli("vpn", "cut", udids[2], "--reason", "test")
        cli("vpn", "restore", udids[0], "--reason", "test")
        agent = start_agent()
        _wait(converged, "the restarted agent converged", agent_log)
        assert len(active_peers()) == 4
        listed = json.loads(cli("vpn", "gateway", "list"))
        assert listed[0]["in_sync"] and listed[0]["applied_peers"] == 4 and listed[0]["last_error"] is None

        # Reports must carry the gateway's seal: a forged handshake is refused, a sealed one recorded.
        client = make_celery(REDIS_URL)
        client.conf.broker_transport_options = {"global_keyprefix": broker["IPAD_MDM_REDIS_KEY_PREFIX"]}
        some_key = next(iter(active_peers()))
        forged = Fernet(Fernet.generate_key()).encrypt(json.dumps(
            {"gateway": "gw1", "seq": 10**6, "ok": True, "handshakes": [[some_key, int(time.time())]]}).encode())
        client.send_task(REPORT_TASK, args=["gw1", forged.decode()], queue=broker["IPAD_MDM_CELERY_QUEUE"])
        sealed = Fernet(key_file.read_bytes().strip()).encrypt(json.dumps(
            {"gateway": "gw1", "seq": gateway_row().applied_seq, "ok": True, "peers": 4,
             "handshakes": [[some_key, int(time.time())]]}).encode())
        client.send_task(REPORT_TASK, args=["gw1", sealed.decode()], queue=broker["IPAD_MDM_CELERY_QUEUE"])

        def sighted():
            with server.session() as s:
                return s.scalar(select(VpnTunnelSighting.id))
        _wait(sighted, "the sealed report's handshake was recorded", worker_log)
        assert gateway_row().applied_seq < 10**6  # the forged one changed nothing
        assert "not sealed with its key" in worker_log.read_text(errors="replace")
        client.close()
    finally:
        for proc in (agent, worker):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "Traceback" not in agent_log.read_text(errors="replace"), agent_log.read_text(errors="replace")[-3000:]
    assert all(k not in agent_log.read_text() for k in active_peers().values())  # no preshared key in its log


def test_agent_drives_the_real_wg_tool_and_reports_what_it_could_not_apply(server, tmp_path):
    """`--apply syncconf`: the agent's `wg set` / `wg syncconf` command lines go to the real wg tool. This
    machine's kernel has no WireGuard, so wg refuses at the kernel ("Unable to modify interface"), after
    parsing our arguments (a malformed key or option would be refused by wg's parser instead): the agent
    keeps its last good state, reports the failure, and the server records it and sends a full resync."""
    import subprocess as sp

    from vpn import gateways
    from vpn.agent import Agent

    with server.session() as s:
        row, key = gateways.add(s, server.instance, "gw2", "ipadmdmtest0")
    sent = []
    agent = Agent("gw2", key, tmp_path / "state", interface="ipadmdmtest0", apply="syncconf", wg_bin="wg",
                  send=lambda task, args: sent.append((task, args)))
    psk = "c2VjcmV0LXByZXNoYXJlZC1rZXktbm90LWluLWxvZ3M="
    message = {"gateway": "gw2", "seq": 1, "full": False, "remove": [],
               "upsert": [{"public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "preshared_key": psk,
                           "allowed_ips": "10.77.0.2/32"}]}
    out = agent.handle(Fernet(key).encrypt(json.dumps(message).encode()).decode())
    assert out == {"failed": 1} and agent.state.seq == 0 and agent.state.peers == {}
    [(task, (name, token))] = sent
    report = json.loads(Fernet(key).decrypt(token.encode()))
    assert task == "vpn.gateway.report" and report["ok"] is False and report["resync"] is True
    assert "Unable to modify interface" in report["detail"] and psk not in report["detail"]
    probe = sp.run(["wg", "set", "ipadmdmtest0", "peer", "not-a-key", "remove"], capture_output=True, text=True)
    assert "Key is not the correct length or format" in probe.stderr  # the parser would have said so for ours
    # The server records the failure (the resync request itself is exercised through the broker above).
    failed = Fernet(key).encrypt(json.dumps({k: v for k, v in report.items() if k != "resync"}).encode()).decode()
    assert gateways.receive_report(server.instance, "gw2", failed)["applied_seq"] == 0
    with server.session() as s:
        recorded = s.scalar(select(VpnGateway).where(VpnGateway.name == "gw2"))
        assert "Unable to modify interface" in recorded.last_error and recorded.applied_seq == 0
