"""`ipad-mdm serve` as README starts it: a real process, TLS, a fresh instance, ready to enroll."""
from __future__ import annotations

import json
import os
import re
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.simulator import SimulatedIPad

IPAD_MDM = str(Path(sys.executable).with_name("ipad-mdm"))


def test_serve_initialises_instance_and_enrolls(tmp_path):
    port = free_port()
    inst = tmp_path / "inst"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IPAD_MDM_", "DATABASE_URL"))}
    proc = subprocess.Popen([IPAD_MDM, "serve", "--host", "127.0.0.1", "--port", str(port), "--instance", str(inst)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Enrollment token #(\d+) .*: its URL is in (\S+)", line)
            if m:
                # The one-time URL is not printed to a non-interactive output (a service log):
                # it is in a 0600 file of the instance.
                kept = Path(m.group(2))
                assert kept.parent == inst / "secrets" and stat.S_IMODE(kept.stat().st_mode) == 0o600
                url = json.loads(kept.read_text())["url"]
                token_id = int(m.group(1))
        assert url, "".join(lines)
        assert json.loads(kept.read_text())["id"] == token_id
        assert url.startswith(f"https://127.0.0.1:{port}/mdm/enroll?token=")

        # Instance initialised: SQLite database, demo CA, secrets 0600 in a 0700 folder.
        assert stat.S_IMODE((inst / "ipad-mdm.sqlite3").stat().st_mode) == 0o600  # UnlockTokens live there
        assert stat.S_IMODE((inst / "secrets").stat().st_mode) == 0o700
        for key in (inst / "secrets").iterdir():
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        ca = str(inst / "ca" / "ca.pem")
        verify = ssl.create_default_context(cafile=ca)
        for _ in range(100):
            try:
                assert httpx.get(f"https://127.0.0.1:{port}/healthz", verify=verify).json()["status"] == "ok"
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        sim = SimulatedIPad(f"https://127.0.0.1:{port}", verify=verify)
        sim.enroll(url)  # profile verified, SCEP, Authenticate, TokenUpdate
        handled = sim.process_commands()
        assert [c["Command"]["RequestType"] for c in handled][:2] == ["DeviceInformation", "SecurityInfo"]
        sim.close()
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    # No secret material in the server's output: not the enrollment token, not a key.
    out = "".join(lines) + out
    assert url.split("token=", 1)[1] not in out
    # Everything under the instance is private to the server's user.
    for path in [inst, *inst.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    for secret in (inst / "secrets").iterdir():
        body = secret.read_text().strip().splitlines()
        inner = [l for l in body if l and not l.startswith("-----")]
        assert not any(l in out for l in inner if len(l) > 20), secret.name
