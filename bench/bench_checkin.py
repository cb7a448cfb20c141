"""Check-in round trips per second for N simulated devices.

Starts `ipad-mdm serve` exactly as README does (embedded default: SQLite,
demo CA, TLS by the embedded server), enrolls N simulated iPads over the real
protocol (profile, SCEP, Authenticate, TokenUpdate), then has them send signed
Idle connects from several threads. The same requests go to a bare Flask
handler served by the same server stack (werkzeug, same TLS settings) to show
what the MDM work itself costs. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_checkin.py --devices 50 --seconds 10 --concurrency 8
"""
from __future__ import annotations

import argparse
import os
import plistlib
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.simulator import SimulatedIPad  # noqa: E402

IPAD_MDM = str(Path(sys.executable).with_name("ipad-mdm"))

BARE_APP = r'''
import ssl, sys
from flask import Flask, Response
from werkzeug.serving import run_simple
app = Flask("bare")
@app.put("/mdm/connect")
def connect():
    return Response(b"", status=200)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
ctx.verify_mode = ssl.CERT_OPTIONAL
ctx.load_verify_locations(sys.argv[4])
print("ready", flush=True)
run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True, ssl_context=ctx)
'''


def start_server(instance: Path, port: int):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IPAD_MDM_", "DATABASE_URL"))}
    env["IPAD_MDM_APNS_URL"] = "http://127.0.0.1:9"  # no APNs here: pushes fail fast and are retried later
    proc = subprocess.Popen([IPAD_MDM, "serve", "--host", "127.0.0.1", "--port", str(port), "--instance", str(instance)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if re.search(r"Enrollment URL", line):
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc
    proc.kill()
    raise SystemExit("server did not start")


def enrollment_urls(instance: Path, base_url: str, n: int) -> list[str]:
    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance
    from mdm import service

    inst = open_instance(load_settings(instance, base_url=base_url))
    with inst.database.session() as s:
        urls = [service.create_enrollment(s, inst.settings, created_by="bench")["url"] for _ in range(n)]
    inst.database.dispose()
    return urls


def hammer(url: str, requests: list[tuple[bytes, str]], seconds: float, concurrency: int, verify) -> tuple[int, list[float], int]:
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def worker(idx: int):
        nonlocal errors
        mine = requests[idx::concurrency] or requests
        local, bad = [], 0
        with httpx.Client(verify=verify, timeout=30) as client:
            i = 0
            while time.monotonic() < stop:
                body, sig = mine[i % len(mine)]
                t0 = time.perf_counter()
                r = client.put(url, content=body, headers={"Mdm-Signature": sig})
                if r.status_code == 200:  # only answered requests count as throughput or latency
                    local.append(time.perf_counter() - t0)
                else:
                    bad += 1
                i += 1
        with lock:
            latencies.extend(local)
            errors += bad

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return int(len(latencies) / elapsed), latencies, errors


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-checkin-") as tmp:
        instance = Path(tmp) / "instance"
        port = free_port()
        base = f"https://127.0.0.1:{port}"
        server = start_server(instance, port)
        bare = None
        try:
            verify = ssl.create_default_context(cafile=str(instance / "ca" / "ca.pem"))
            t0 = time.perf_counter()
            sims = []
            for url in enrollment_urls(instance, base, args.devices):
                sim = SimulatedIPad(base, verify=verify)
                sim.enroll(url)
                sim.process_commands()  # drain the initial inventory commands
                sims.append(sim)
            enroll_s = time.perf_counter() - t0
            # Pre-signed Idle bodies: the server verifies every signature; the clients don't re-sign.
            reqs = []
            for sim in sims:
                body = plistlib.dumps({"UDID": sim.udid, "Status": "Idle"})
                reqs.append((body, sim.sign(body)))
                sim.close()
            mdm_rps, mdm_lat, mdm_err = hammer(f"{base}/mdm/connect", reqs, args.seconds, args.concurrency, verify)

            bare_port = free_port()
            bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(bare_port), str(instance / "ca" / "server.pem"),
                                     str(instance / "secrets" / "server.key"), str(instance / "ca" / "ca.pem")],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            bare.stdout.readline()
            time.sleep(0.5)
            bare_rps, bare_lat, bare_err = hammer(f"https://127.0.0.1:{bare_port}/mdm/connect", reqs, args.seconds,
                                                  args.concurrency, verify)
        finally:
            server.terminate()
            if bare:
                bare.terminate()

    print(f"devices={args.devices} concurrency={args.concurrency} seconds={args.seconds} (server: ipad-mdm serve, SQLite, TLS)")
    print(f"enrollment (profile+SCEP+Authenticate+TokenUpdate+5 inventory commands): {enroll_s / args.devices * 1000:.0f} ms/device")
    print(f"{'endpoint':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'errors':>7}")
    print(f"{'MDM connect (Idle, signed)':34} {mdm_rps:8d} {pct(mdm_lat, 50):8.1f} {pct(mdm_lat, 99):8.1f} "
          f"{statistics.fmean(mdm_lat) * 1000:8.1f} {mdm_err:7d}")
    print(f"{'bare Flask handler, same stack':34} {bare_rps:8d} {pct(bare_lat, 50):8.1f} {pct(bare_lat, 99):8.1f} "
          f"{statistics.fmean(bare_lat) * 1000:8.1f} {bare_err:7d}")
    print(f"ratio MDM/bare: {mdm_rps / max(bare_rps, 1):.2f}")


if __name__ == "__main__":
    main()
