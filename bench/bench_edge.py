"""The reverse-proxy decision on the production stack: nginx (the shipped template, mTLS) in front of
a document system, gunicorn (3 workers, TLS, PostgreSQL) deciding every request through
auth_request, against the same nginx serving the same document without auth_request.

    .venv/bin/python bench/bench_edge.py [--requests 4000] [--concurrency 8] [--repeat 3]

Figures
  server CPU per decision: measured in each gunicorn worker thread from pre_request to
      post_request (bench/gunicorn_cpu.py), mean / p50 / p99 — the target is p99 < 1 ms
  throughput through nginx: gated (auth_request) / plain, ApacheBench with the iPad's identity
      certificate (-E), keep-alive, alternating, --repeat times; the median ratio
Checks the work was done: every request answered 200 with the document's bytes (ab's length
check), each gated request left exactly one "allow" row in the audit chain, and the chain verifies.
"""
from __future__ import annotations

import argparse
import json
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

import httpx  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from bench.run_all import wait_http  # noqa: E402
from tests.apns_standin import start_apns_standin  # noqa: E402
from tests.conftest import free_port, fresh_postgres_database, seed_instance_dir  # noqa: E402
from tests.edge_stack import start_nginx  # noqa: E402
from tests.simulator import SimulatedIPad  # noqa: E402

SECRET = secrets.token_urlsafe(24)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ab(url: str, pem: Path, n: int, c: int) -> tuple[float, int, int]:
    out = subprocess.run(["ab", "-q", "-k", "-c", str(c), "-n", str(n), "-E", str(pem), url],
                         capture_output=True, text=True, timeout=900).stdout
    rate = float(next(line.split()[3] for line in out.splitlines() if line.startswith("Requests per second")))
    non2xx = next((int(line.split()[-1]) for line in out.splitlines() if line.startswith("Non-2xx responses")), 0)
    failed = next((int(line.split()[2]) for line in out.splitlines() if line.startswith("Failed requests")), 0)
    return rate, non2xx, failed


def setup_office(base: str, env: dict, verify, sim: SimulatedIPad) -> None:
    def token(role):
        return json.loads(subprocess.run([str(BIN / "ipad-mdm"), "api-token", "create", "--name", f"bench-{role}",
                                          "--role", role, "--json"], env=env, check=True, capture_output=True,
                                         text=True).stdout)["token"]

    subprocess.run([str(BIN / "ipad-mdm"), "unit", "add", "TTTH", "Trung tâm Tin học"], env=env, check=True,
                   capture_output=True)
    admin = httpx.Client(base_url=base, verify=verify, headers={"Authorization": f"Bearer {token('it_admin')}"})
    officer = httpx.Client(base_url=base, verify=verify,
                           headers={"Authorization": f"Bearer {token('security_officer')}"})
    for p in officer.get("/api/v1/policies").json()["policies"]:
        officer.delete(f"/api/v1/policies/{p['id']}")
    officer.post("/api/v1/policies", json={"name": "Bench", "rules": [{"kind": "passcode_present"}], "grace_hours": 0,
                                           "assign": {"all": True}, "actions": ["block_gateway"]}).raise_for_status()
    officer.post("/api/v1/edge/rules", json={"name": "Mật", "pattern": "/mat/**", "classification": "secret"}).raise_for_status()
    leader = admin.post("/api/v1/leaders", json={"full_name": "Nguyễn Văn An", "title": "Giám đốc", "unit": "TTTH",
                                                 "role": "director"}).json()
    admin.put(f"/api/v1/devices/{sim.udid}/assignment", json={"leader_id": leader["id"]}).raise_for_status()
    admin.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "SecurityInfo"}).raise_for_status()
    sim.process_commands()
    state = admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()
    assert state.get("state") == "compliant" and state.get("document_access") is True, state


def audit_counts(env: dict) -> tuple[int, bool]:
    from sqlalchemy import func, select

    from document_gateway import audit
    from document_gateway.models import GatewayAuditEvent
    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance

    inst = open_instance(load_settings(env["IPAD_MDM_INSTANCE"], database_url=env["DATABASE_URL"]), migrate=False)
    try:
        with inst.database.session() as s:
            n = s.scalar(select(func.count()).where(GatewayAuditEvent.action == "edge",
                                                   GatewayAuditEvent.decision == "allow"))
            return n, audit.full_check(s, inst).ok
    finally:
        inst.database.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads per worker")
    ap.add_argument("--size", type=int, default=50_000, help="bytes of the document the upstream serves")
    args = ap.parse_args()
    if shutil.which("ab") is None or shutil.which("nginx") is None:
        sys.exit("needs ApacheBench and nginx: apt-get install apache2-utils nginx")
    print(f"config: nginx (shipped template, mTLS) -> gunicorn {args.workers} workers x {args.threads} gthread threads, TLS, PostgreSQL; "
          f"{args.requests} requests x {args.repeat} rounds per path, ab -k -c {args.concurrency}, "
          f"document {args.size:,} bytes")
    tmp = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    (tmp / "cpu").mkdir()
    docs = tmp / "docs"
    for sub in ("van-ban", "plain/van-ban"):
        (docs / sub).mkdir(parents=True)
        (docs / sub / "bao-cao.txt").write_bytes(b"x" * args.size)
    seed_instance_dir(tmp / "instance")
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(tmp / "instance" / "ca" / "ca.pem"))
    with fresh_postgres_database() as db_url, start_apns_standin(tls=False) as apns:
        env = dict(__import__("os").environ, DATABASE_URL=db_url, IPAD_MDM_INSTANCE=str(tmp / "instance"),
                   IPAD_MDM_BASE_URL=base, IPAD_MDM_APNS_URL=apns.url,
                   IPAD_MDM_TLS_CERT=str(tmp / "instance" / "ca" / "server.pem"),
                   IPAD_MDM_TLS_KEY=str(tmp / "instance" / "secrets" / "server.key"),
                   IPAD_MDM_CLIENT_CERT_HEADER="X-Client-Cert", IPAD_MDM_PROXY_SECRET=SECRET,
                   BENCH_CPU_DIR=str(tmp / "cpu"), PYTHONPATH=str(ROOT))
        env.pop("CELERY_BROKER_URL", None)
        subprocess.run([str(BIN / "ipad-mdm"), "db", "upgrade"], env=env, check=True, capture_output=True)
        web = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "bench" / "gunicorn_cpu.py"),
                                "ipad_mdm.wsgi:app"], cwd=ROOT, stdout=open(tmp / "web.log", "ab"),
                               stderr=subprocess.STDOUT,
                               env=dict(env, IPAD_MDM_BIND=f"127.0.0.1:{port}", IPAD_MDM_WORKERS=str(args.workers),
                                        IPAD_MDM_THREADS=str(args.threads)))
        try:
            wait_http(f"{base}/healthz", verify)
            from ipad_mdm.config import load_settings
            from ipad_mdm.instance import open_instance
            from mdm import service

            inst = open_instance(load_settings(env["IPAD_MDM_INSTANCE"], database_url=db_url, base_url=base,
                                               client_cert_header="X-Client-Cert", proxy_secret=SECRET),
                                 migrate=False)
            with inst.database.session() as s:
                url = service.create_enrollment(s, inst.settings, created_by="bench")["url"]
            sim = SimulatedIPad(base, verify=verify)
            sim.enroll(url)
            sim.process_commands()
            setup_office(base, env, verify, sim)
            pem = tmp / "ipad.pem"
            pem.write_bytes(sim.identity.public_bytes(serialization.Encoding.PEM) + sim.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
            pem.chmod(0o600)
            up_port = free_port()
            upstream = (f"    server {{ listen 127.0.0.1:{up_port}; access_log off; root {docs}; "
                        f"location / {{ }} }}")
            server = SimpleNamespace(instance=inst, url=base)
            with start_nginx(tmp / "nginx", server, f"http://127.0.0.1:{up_port}", proxy_secret=SECRET,
                             plain_location=True, workers=1, extra_http=upstream, access_log=False) as edge:
                before, _ = audit_counts(env)
                for u in (f"{edge}/van-ban/bao-cao.txt", f"{edge}/plain/van-ban/bao-cao.txt"):
                    ab(u, pem, 200, args.concurrency)  # warm both paths (TLS sessions, pools)
                for f in (tmp / "cpu").iterdir():
                    f.unlink()
                runs, bad = [], 0
                for _ in range(args.repeat):
                    g_rate, g_non2xx, g_failed = ab(f"{edge}/van-ban/bao-cao.txt", pem, args.requests, args.concurrency)
                    p_rate, p_non2xx, p_failed = ab(f"{edge}/plain/van-ban/bao-cao.txt", pem, args.requests,
                                                    args.concurrency)
                    runs.append((g_rate, p_rate))
                    bad += g_non2xx + g_failed + p_non2xx + p_failed
                    print(f"  round: gated {g_rate:,.0f}/s  plain {p_rate:,.0f}/s  ratio {g_rate / p_rate:.2f}")
                refused = subprocess.run(["ab", "-q", "-c", "1", "-n", "5", "-E", str(pem), f"{edge}/mat/quyet-dinh.pdf"],
                                         capture_output=True, text=True).stdout
            after, chain_ok = audit_counts(env)
            inst.database.dispose()
        finally:
            web.terminate()
            web.wait(timeout=60)
    samples = []
    for f in (tmp / "cpu").iterdir():
        for line in f.read_text().splitlines():
            path, spent = line.rsplit(" ", 1)
            if path == "/edge/decide":
                samples.append(float(spent) * 1000)
    gated = args.requests * args.repeat + 200
    checks = {
        "every request 200 with the document's length": bad == 0,
        "one audit row per gated request": after - before == gated,
        "audit chain verifies": chain_ok,
        "secret path refused (403)": "Non-2xx responses:      5" in refused,
        "CPU samples for the decisions": len(samples) >= args.requests * args.repeat * 0.95,
    }
    ratio = statistics.median(g / p for g, p in runs)
    print(f"server CPU per decision (ms, {len(samples):,} samples): mean {statistics.mean(samples):.3f}  "
          f"p50 {pct(samples, 50):.3f}  p99 {pct(samples, 99):.3f}  max {max(samples):.3f}")
    print(f"throughput through nginx: gated/plain median ratio {ratio:.2f} "
          f"(gated {statistics.median(g for g, _ in runs):,.0f}/s, plain {statistics.median(p for _, p in runs):,.0f}/s)")
    print()
    print(f"{'figure':<52} {'measured':>10} {'target':>10}")
    print(f"{'decision server CPU p99 (ms)':<52} {pct(samples, 99):>10.3f} {'< 1':>10}")
    print(f"{'gated / plain throughput through nginx':<52} {ratio:>10.2f} {'(ratio)':>10}")
    for name, ok in checks.items():
        print(f"check: {name}: {'ok' if ok else 'FAILED'}")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
