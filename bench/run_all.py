"""The whole benchmark in one command, on the production stack.

Starts PostgreSQL + Redis (if down), a fresh database, gunicorn (the MDM app, several
workers, TLS), a Celery worker (pushes), a local APNs stand-in, and a bare Flask
handler on the same gunicorn settings. Enrolls N simulated iPads over the real
protocol, then prints one table per N:

  check-in round trips/s (signed Idle connects) vs the bare handler, and the ratio
  command-delivery latency p50/p99 (API enqueue -> push at APNs -> device connects -> command in hand)
  compliance evaluation time for all N devices
and, once, the gateway's added latency (bench_gateway.py) and the monthly report time
(bench_reports.py). Prints figures; asserts nothing.

    .venv/bin/python bench/run_all.py                       # N = 1000
    .venv/bin/python bench/run_all.py --scaling 1000,5000,10000
"""
from __future__ import annotations

import argparse
import json
import os
import plistlib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

import httpx  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from bench.bench_checkin import hammer, pct  # noqa: E402
from tests.apns_standin import start_apns_standin  # noqa: E402
from tests.conftest import REDIS_URL, free_port, fresh_postgres_database  # noqa: E402
from tests.simulator import SimulatedIPad  # noqa: E402

BARE = ROOT / "bench" / "bare_app.py"


def wait_http(url: str, verify) -> None:
    for _ in range(600):
        try:
            httpx.get(url, verify=verify)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def gunicorn(app: str, env: dict, port: int, workers: int, log: Path) -> subprocess.Popen:
    env = dict(env, IPAD_MDM_BIND=f"127.0.0.1:{port}", IPAD_MDM_WORKERS=str(workers))
    return subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), app],
                            cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def enroll_many(base: str, env: dict, verify, n: int, key, threads: int) -> list[SimulatedIPad]:
    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance
    from mdm import service

    inst = open_instance(load_settings(env["IPAD_MDM_INSTANCE"], database_url=env["DATABASE_URL"], base_url=base))
    with inst.database.session() as s:
        urls = [service.create_enrollment(s, inst.settings, created_by="bench")["url"] for _ in range(n)]
    inst.database.dispose()

    def one(url):
        sim = SimulatedIPad(base, verify=verify, key=key)
        sim.enroll(url)
        sim.process_commands()
        return sim

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, urls))


def command_latency(base: str, sims: list[SimulatedIPad], token: str, apns, verify, samples: int) -> list[float]:
    """API enqueue -> push reaches APNs -> the device connects and receives the command."""
    lat: list[float] = []
    lock = threading.Lock()
    targets = sims[:samples]

    def one(sim: SimulatedIPad):
        with httpx.Client(verify=verify, timeout=60, headers={"Authorization": f"Bearer {token}"}) as api:
            before = sum(1 for p in apns.pushes if p.token == sim.push_token.hex())
            t0 = time.perf_counter()
            r = api.post(f"{base}/api/v1/devices/{sim.udid}/commands", json={"request_type": "SecurityInfo"})
            uuid = r.json()["command_uuid"]
            while sum(1 for p in apns.pushes if p.token == sim.push_token.hex()) <= before:
                time.sleep(0.002)
            got = None
            resp = sim.connect("Idle")
            while resp.content:
                cmd = plistlib.loads(resp.content)
                if cmd["CommandUUID"] == uuid and got is None:
                    got = time.perf_counter() - t0
                status, payload = sim.answer(cmd["Command"])
                resp = sim.connect(status, cmd["CommandUUID"], **payload)
        with lock:
            lat.append(got if got is not None else float("nan"))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, targets))
    return lat  # NaN: a command that never reached its device (counted as lost, not dropped)


def evaluate_all_seconds(env: dict) -> tuple[float, dict]:
    from compliance import engine
    from ipad_mdm.app import create_app
    from ipad_mdm.config import load_settings
    from ipad_mdm.dispatch import NoDispatch
    from ipad_mdm.instance import open_instance

    inst = open_instance(load_settings(env["IPAD_MDM_INSTANCE"], database_url=env["DATABASE_URL"], base_url=env["IPAD_MDM_BASE_URL"]))
    app = create_app(inst=inst, dispatcher=NoDispatch())
    t0 = time.perf_counter()
    counts = engine.evaluate_all(inst.database, app.extensions["ipad_mdm.hooks"], None)
    took = time.perf_counter() - t0
    inst.database.dispose()
    return took, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scaling", default="1000", help="comma-separated device counts, e.g. 1000,5000,10000")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--enroll-threads", type=int, default=8)
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--skip-extras", action="store_true", help="skip the gateway and report benchmarks")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.scaling.split(","))

    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], check=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp, fresh_postgres_database() as db_url:
        tmp = Path(tmp)
        instance = tmp / "instance"
        port, bare_port = free_port(), free_port()
        base = f"https://127.0.0.1:{port}"
        from ipad_mdm.config import load_settings
        from ipad_mdm.instance import open_instance

        inst = open_instance(load_settings(instance, database_url=db_url, base_url=base))
        topic, push_cert = inst.push_topic, inst.push_cert_path.read_bytes()
        inst.database.dispose()
        with start_apns_standin(tls=True, expected_topic=topic, client_ca_pem=push_cert) as apns:
            queue = f"ipad-mdm-bench-{os.getpid()}"
            env = dict(os.environ, DATABASE_URL=db_url, IPAD_MDM_INSTANCE=str(instance), IPAD_MDM_BASE_URL=base,
                       CELERY_BROKER_URL=REDIS_URL, IPAD_MDM_CELERY_QUEUE=queue, IPAD_MDM_APNS_URL=apns.url,
                       IPAD_MDM_APNS_CA=apns.server_ca_path, PYTHONPATH=str(ROOT),
                       IPAD_MDM_TLS_CERT=str(instance / "ca" / "server.pem"),
                       IPAD_MDM_TLS_KEY=str(instance / "secrets" / "server.key"))
            procs = [
                gunicorn("ipad_mdm.wsgi:app", env, port, args.workers, tmp / "web.log"),
                gunicorn("bench.bare_app:app", env, bare_port, args.workers, tmp / "bare.log"),
                subprocess.Popen([sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=threads",
                                  "--concurrency=4", "-Q", queue, "--without-gossip", "--without-mingle", "--loglevel=WARNING"],
                                 cwd=ROOT, env=env, stdout=open(tmp / "worker.log", "ab"), stderr=subprocess.STDOUT),
            ]
            try:
                verify = ssl.create_default_context(cafile=str(instance / "ca" / "ca.pem"))
                wait_http(f"{base}/healthz", verify)
                wait_http(f"https://127.0.0.1:{bare_port}/healthz", verify)
                token = json.loads(subprocess.run([str(BIN / "ipad-mdm"), "api-token", "create", "--name", "bench",
                                                   "--role", "it_admin", "--json"], env=env, check=True,
                                                  capture_output=True, text=True).stdout)["token"]
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                sims: list[SimulatedIPad] = []
                for n in sizes:
                    t0 = time.perf_counter()
                    sims += enroll_many(base, env, verify, n - len(sims), key, args.enroll_threads)
                    enroll_rate = (n - (rows[-1]["n"] if rows else 0)) / (time.perf_counter() - t0)
                    reqs = []
                    for sim in sims:
                        body = plistlib.dumps({"UDID": sim.udid, "Status": "Idle"})
                        reqs.append((body, sim.sign(body)))
                    mdm_rps, mdm_lat, mdm_err = hammer(f"{base}/mdm/connect", reqs, args.seconds, args.concurrency, verify)
                    bare_rps, bare_lat, _ = hammer(f"https://127.0.0.1:{bare_port}/mdm/connect", reqs, args.seconds,
                                                   args.concurrency, verify)
                    lat_all = command_latency(base, sims, token, apns, verify, min(args.latency_samples, len(sims)))
                    lat = [x for x in lat_all if x == x]
                    lost = len(lat_all) - len(lat)
                    eval_s, counts = evaluate_all_seconds(env)
                    rows.append(dict(n=n, enroll_rate=enroll_rate, mdm_rps=mdm_rps, bare_rps=bare_rps,
                                     ratio=mdm_rps / max(bare_rps, 1), mdm_p99=pct(mdm_lat, 99), errors=mdm_err,
                                     lost=lost,
                                     cmd_p50=pct(lat, 50), cmd_p99=pct(lat, 99), eval_s=eval_s,
                                     evaluated=counts.get("evaluated")))
                    print(f"N={n} done", file=sys.stderr, flush=True)
                for sim in sims:
                    sim.close()
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()

    print(f"production stack: gunicorn x{args.workers} workers (gthread) + PostgreSQL + Redis/Celery, TLS; "
          f"{args.concurrency} client threads, {args.seconds:.0f} s per measurement; machine: {os.cpu_count()} cores")
    head = (f"{'N':>6} {'enroll/s':>9} {'check-in/s':>11} {'bare/s':>8} {'ratio':>6} {'check-in p99 ms':>16} "
            f"{'errors':>7} {'cmd p50 ms':>11} {'cmd p99 ms':>11} {'lost cmds':>10} {'evaluate all s':>15}")
    print(head)
    for r in rows:
        print(f"{r['n']:6d} {r['enroll_rate']:9.1f} {r['mdm_rps']:11d} {r['bare_rps']:8d} {r['ratio']:6.2f} "
              f"{r['mdm_p99']:16.1f} {r['errors']:7d} {r['cmd_p50']:11.1f} {r['cmd_p99']:11.1f} {r['lost']:10d} "
              f"{r['eval_s']:15.2f}")
    failed = [r["n"] for r in rows if r["errors"] or r["lost"]]
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        grow = last["n"] / first["n"]
        print(f"scaling {first['n']} -> {last['n']} devices (x{grow:.0f}): check-in/s x{last['mdm_rps'] / max(first['mdm_rps'], 1):.2f}, "
              f"command p99 x{last['cmd_p99'] / max(first['cmd_p99'], 1e-9):.2f}, evaluate-all time x{last['eval_s'] / max(first['eval_s'], 1e-9):.2f}")
    if failed:
        # Throughput measured while requests fail, or commands that never arrived, is not a result.
        raise SystemExit(f"bench FAILED: errors or lost commands at N={failed}")
    if not args.skip_extras:
        for script, extra in (("bench_gateway.py", ["--requests", "300"]), ("bench_reports.py", [])):
            path = ROOT / "bench" / script
            if path.exists():
                print(f"\n--- {script} ---", flush=True)
                subprocess.run([sys.executable, str(path), *extra], cwd=ROOT)


if __name__ == "__main__":
    main()
