"""`ipad-mdm vpn agent`: the small worker on a VPN gateway host.

It consumes only its gateway's queue (`vpn-gw.<name>`, one message at a time, in order), applies
each change to its peer file and, with `--apply syncconf`, to the live interface (`wg set … peer …
remove` / add for a change, `wg syncconf` for a full resync), and reports back what it applied,
with the peers' latest handshakes, sealed with its key. It holds no database credentials: the
gateway key file (0600) and the broker address are all it needs. Its state (the applied sequence
number and the peers) lives in its state directory (0700, files 0600), so a restarted agent knows
where it stopped; at start it says hello and the server answers with a full resync.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .gateways import APPLY_TASK, REPORT_TASK, queue_name
from .sightings import DumpError, parse_wg_dump

log = logging.getLogger(__name__)


class AgentState:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.path = self.dir / "state.json"
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.seq: int = int(data.get("seq", 0))
        self.peers: dict[str, dict] = data.get("peers", {})

    def save(self) -> str:
        """Write the state and the peer file atomically (0600); returns the peer file's SHA-256."""
        text = render_peers(self.peers)
        for path, body in ((self.dir / "peers.conf", text), (self.path, json.dumps({"seq": self.seq, "peers": self.peers}))):
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        return hashlib.sha256(text.encode()).hexdigest()


def render_peers(peers: dict[str, dict]) -> str:
    """The [Peer] sections `wg syncconf` takes after the gateway's own [Interface] section."""
    out = []
    for key in sorted(peers):
        p = peers[key]
        out.append(f"[Peer]\nPublicKey = {key}\nPresharedKey = {p['preshared_key']}\nAllowedIPs = {p['allowed_ips']}\n")
    return "\n".join(out)


class Agent:
    def __init__(self, name: str, key: bytes, state_dir: Path, *, interface: str = "wg0", apply: str = "file",
                 wg_bin: str = "wg", interface_config: Path | None = None, send=None):
        self.name, self.fernet, self.interface, self.apply_mode = name, Fernet(key), interface, apply
        self.wg_bin, self.interface_config = wg_bin, interface_config
        self.state = AgentState(state_dir)
        self.send = send  # send(task name, args): the report back through the broker

    # -------------------------------------------------------------- applying
    def _wg(self, *args: str, stdin: str | None = None) -> None:
        proc = subprocess.run([self.wg_bin, *args], input=stdin, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:  # wg's message names the interface or option, never a key we pass on stdin
            raise RuntimeError(f"wg {args[0]} failed: {proc.stderr.strip()[:200]}")

    def _apply_live(self, message: dict) -> None:
        if self.apply_mode != "syncconf":
            return
        if message.get("full"):
            head = self.interface_config.read_text() if self.interface_config else ""
            self._wg("syncconf", self.interface, "/dev/stdin", stdin=head + "\n" + render_peers(self.state.peers))
            return
        for key in message.get("remove", ()):
            self._wg("set", self.interface, "peer", key, "remove")
        for p in message.get("upsert", ()):
            self._wg("set", self.interface, "peer", p["public_key"], "preshared-key", "/dev/stdin",
                     "allowed-ips", p["allowed_ips"], stdin=p["preshared_key"] + "\n")

    def handle(self, token: str) -> dict:
        try:
            message = json.loads(self.fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError):
            log.error("a message on %s is not sealed with this gateway's key: ignored", queue_name(self.name))
            return {"ignored": "bad_seal"}
        seq, full = int(message.get("seq", 0)), bool(message.get("full"))
        if message.get("gateway") != self.name:
            return {"ignored": "other_gateway"}
        if seq <= self.state.seq:
            return {"ignored": "already_applied", "seq": seq}
        if not full and seq != self.state.seq + 1:
            log.warning("gateway %s: change %d after %d; asking for a resync", self.name, seq, self.state.seq)
            self.report(ok=True, gap=True)
            return {"gap": seq}
        if full:
            self.state.peers = {p["public_key"]: {"preshared_key": p["preshared_key"], "allowed_ips": p["allowed_ips"]}
                                for p in message.get("peers", ())}
        else:
            for key in message.get("remove", ()):
                self.state.peers.pop(key, None)
            for p in message.get("upsert", ()):
                self.state.peers[p["public_key"]] = {"preshared_key": p["preshared_key"], "allowed_ips": p["allowed_ips"]}
        try:
            self._apply_live(message)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            # The peer file is not advanced: the server resends everything (a full resync).
            log.error("gateway %s: change %d not applied: %s", self.name, seq, exc)
            self.state = AgentState(self.state.dir)
            self.report(ok=False, detail=str(exc), resync=True)
            return {"failed": seq}
        self.state.seq = seq
        sha = self.state.save()
        self.report(ok=True, sha256=sha)
        log.info("gateway %s: change %d applied (%s), %d peers", self.name, seq, "full" if full else "incremental",
                 len(self.state.peers))
        return {"applied": seq, "peers": len(self.state.peers)}

    # -------------------------------------------------------------- reporting
    def handshakes(self) -> list[list]:
        if self.apply_mode != "syncconf":
            return []
        try:
            proc = subprocess.run([self.wg_bin, "show", self.interface, "dump"], capture_output=True, text=True, timeout=30)
            return [[h.public_key, int(h.latest.timestamp())] for h in parse_wg_dump(proc.stdout) if h.latest]
        except (OSError, DumpError, subprocess.TimeoutExpired) as exc:
            log.warning("gateway %s: handshakes not read: %s", self.name, exc)
            return []

    def report(self, **fields) -> None:
        body = {"gateway": self.name, "seq": self.state.seq, "peers": len(self.state.peers),
                "sha256": hashlib.sha256(render_peers(self.state.peers).encode()).hexdigest(),
                "handshakes": self.handshakes(), **fields}
        self.send(REPORT_TASK, [self.name, self.fernet.encrypt(json.dumps(body).encode()).decode()])


def run(name: str, key_file: Path, state_dir: Path, *, interface: str, apply: str, wg_bin: str,
        interface_config: Path | None, report_every: int = 60) -> None:
    """Run the agent's Celery worker on its own queue (blocks)."""
    from celery import bootsteps, signals

    from ipad_mdm.celery_app import make_celery

    mode = key_file.stat().st_mode & 0o777
    if mode & 0o077:
        raise SystemExit(f"{key_file} is readable by others (mode {mode:o}); chmod 600 it")
    app = make_celery()
    agent = Agent(name, key_file.read_bytes().strip(), state_dir, interface=interface, apply=apply, wg_bin=wg_bin,
                  interface_config=interface_config,
                  send=lambda task, args: app.send_task(task, args=args, queue=app.conf.task_default_queue))

    @app.task(name=APPLY_TASK)
    def apply_task(token: str) -> dict:
        return agent.handle(token)

    @signals.worker_ready.connect
    def hello(**_):
        agent.report(ok=True, hello=True)

    class Heartbeat(bootsteps.StartStopStep):
        """Handshakes and the applied state, every `report_every` seconds."""

        requires = {"celery.worker.components:Timer"}

        def start(self, worker):
            self.tref = worker.timer.call_repeatedly(report_every, lambda: agent.report(ok=True))

        def stop(self, worker):
            if getattr(self, "tref", None):
                self.tref.cancel()

    app.steps["worker"].add(Heartbeat)
    app.worker_main(["worker", "-Q", queue_name(name), "--pool=solo", "--concurrency=1", "-n", f"vpn-agent-{name}@%h",
                     "--loglevel=INFO", "--without-mingle", "--without-gossip"])
