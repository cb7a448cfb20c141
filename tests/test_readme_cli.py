"""The README's first CLI steps run, as written and in order, on a fresh instance while
`ipad-mdm serve` runs on a port of its own (#18, item 1): units first, an account from a pipe,
enrollment URLs on the port the server really uses, demo-mode pushes that do not block."""
from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.simulator import SimulatedIPad

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def first_steps() -> list[str]:
    block = re.search(r"<!-- cli-first-steps -->\n```sh\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    assert block, "README lost its first-steps block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAD_MDM_") and k not in
           ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(extra)
    return env


def test_readme_first_steps_run_in_order_on_a_fresh_instance(tmp_path):
    instance = tmp_path / "instance"
    port = free_port()
    log_path = tmp_path / "serve.log"
    serve = subprocess.Popen([str(Path(sys.executable).parent / "ipad-mdm"), "serve", "--port", str(port),
                              "--instance", str(instance)], cwd=ROOT, env=_clean_env(),
                             stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}"
    sim = None
    try:
        for _ in range(600):  # a bound for a process that never comes up, not a timing check
            assert serve.poll() is None, log_path.read_text()
            if (instance / "ca" / "ca.pem").exists():
                try:
                    ctx = ssl.create_default_context(cafile=str(instance / "ca" / "ca.pem"))
                    if httpx.get(f"{base}/healthz", verify=ctx, timeout=2).status_code == 200:
                        break
                except (httpx.TransportError, ssl.SSLError):
                    pass
            time.sleep(0.1)
        assert (instance / "base-url").read_text().strip() == base
        env = _clean_env(IPAD_MDM_INSTANCE=str(instance), ADMIN_PASSWORD="mật-khẩu-đủ-dài-2026")
        seen: dict[str, str] = {}
        for line in first_steps():
            command = line
            for placeholder in ("UDID", "UUID", "TOKEN_ID"):
                if re.search(rf"\b{placeholder}\b", command.split("#")[0]):
                    assert placeholder in seen, f"{placeholder} used before a command printed it: {line}"
                    command = re.sub(rf"\b{placeholder}\b", seen[placeholder], command)
            proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=180)
            assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr and "alembic.runtime" not in proc.stderr, (line, proc.stderr)
            out = proc.stdout
            if "enroll-token create" in line:
                url = json.loads(out)["url"]
                # The URL names the port `serve` really uses, not the default 8000.
                assert url.startswith(base + "/"), url
                sim = SimulatedIPad(base, verify=ctx, serial="DMPXXXXXXXXX")
                sim.enroll(url)  # the iPad opens the URL
                sim.process_commands()
            elif "device list" in line:
                [device] = json.loads(out)
                assert device["serial_number"] == "DMPXXXXXXXXX"
                seen["UDID"] = device["udid"]
            elif "device show" in line:
                detail = json.loads(out)
                assert detail["udid"] == seen["UDID"] and detail["push"]["state"] in ("off_demo", "ok")
            elif "command send" in line:
                sent = json.loads(out)
                # Demo mode: queued at once, the push said to be off (never a wait on Apple).
                assert sent["status"] == "queued" and sent["push"] == "off_demo", sent
                seen["UUID"] = sent["command_uuid"]
                handled = sim.process_commands()  # the iPad checks in by itself
                assert [c["CommandUUID"] for c in handled] == [seen["UUID"]]
            elif "command show" in line:
                assert json.loads(out)["status"] == "acknowledged"
            elif "user create" in line:
                assert "created it-admin" in out
            elif "unit list" in line:
                assert "TTTH" in out and "Trung tâm Tin học" in out
            elif "enroll-token list" in line:
                ids = re.findall(r"^#(\d+)\s+usable", out, re.M)
                assert ids, out  # the re-enrollment token made just before
                seen["TOKEN_ID"] = ids[0]
            elif "enroll-token revoke" in line:
                assert f"#{seen['TOKEN_ID']} revoked" in out
            elif "usb-token add" in line:
                token = json.loads(out)
                assert token["state"] == "in_stock" and token["serial_number"] == "TK000123" and token["certificate"] is None
            elif "usb-token list" in line:
                assert json.loads(out) == []  # no certificate on record yet: nothing can be expiring
        log = log_path.read_text()
        assert log.count("Apple push notifications are off") <= 1
    finally:
        if sim is not None:
            sim.close()
        serve.terminate()
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
