"""Declarative status reports on the production stack: ingestion rate against the idle check-in,
and the time from a status report (passcode removed) to the gateway refusing the iPad.

gunicorn (TLS, several workers) + PostgreSQL + Redis/Celery; N simulated iPads enroll over the
real protocol and sync their declarations (a passcode policy), then:
  1. signed Idle connects/s and signed incremental status reports/s (the same client threads);
     every status report answered 200 must be a stored row (checked);
  2. for M iPads assigned to a leader: GET a document (200), send the status report that says the
     passcode was removed, GET again (must be 403) — the time from sending the report to that
     refusal, idle and with the idle check-in load running alongside.

    .venv/bin/python bench/bench_ddm.py --devices 200 --seconds 10 --samples 40

Prints figures; exits non-zero if the work it timed was not done (a report not stored, a refusal
that did not happen).
"""
from __future__ import annotations

import argparse
import json
import os
import plistlib
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

import httpx  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from bench.bench_checkin import hammer, pct  # noqa: E402
from bench.run_all import enroll_many, gunicorn, wait_http  # noqa: E402
from tests.apns_standin import start_apns_standin  # noqa: E402
from tests.conftest import REDIS_URL, free_port, fresh_postgres_database  # noqa: E402

PROXY_SECRET = secrets.token_urlsafe(24)
PASSCODE = {"identifier": "vpcp.passcode", "type": "passcode.settings", "display_name": "Mật mã",
            "payload": {"RequirePasscode": True, "MinimumLength": 6}}


def status_body(sim, items: dict) -> tuple[bytes, str]:
    body = plistlib.dumps({"MessageType": "DeclarativeManagement", "UDID": sim.udid, "Endpoint": "status",
                           "Data": json.dumps(sim.status_report(items, full=False)).encode()})
    return body, sim.sign(body)


def stored_reports(env) -> int:
    from sqlalchemy import func, select

    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance
    from mdm import StatusReportRecord

    inst = open_instance(load_settings(env["IPAD_MDM_INSTANCE"], database_url=env["DATABASE_URL"],
                                       base_url=env["IPAD_MDM_BASE_URL"]))
    with inst.database.session() as s:
        n = s.scalar(select(func.count()).select_from(StatusReportRecord))
    inst.database.dispose()
    return n


def setup_world(env, base, verify, tokens) -> None:
    from ipad_mdm.config import load_settings
    from ipad_mdm.instance import open_instance
    from ipad_mdm.models import Unit

    inst = open_instance(load_settings(env["IPAD_MDM_INSTANCE"], database_url=env["DATABASE_URL"], base_url=base))
    with inst.database.session() as s:
        s.add(Unit(code="TTTH", name_vi="Trung tâm Tin học", name_en="IT Centre"))
    inst.database.dispose()
    officer = httpx.Client(verify=verify, base_url=base, headers={"Authorization": f"Bearer {tokens['officer']}"})
    admin = httpx.Client(verify=verify, base_url=base, headers={"Authorization": f"Bearer {tokens['admin']}"})
    for p in officer.get("/api/v1/policies").json()["policies"]:
        officer.delete(f"/api/v1/policies/{p['id']}")
    r = officer.post("/api/v1/policies", json={"name": "DDM", "rules": [{"kind": "passcode_present"}],
                                                 "grace_hours": 0, "assign": {"all": True},
                                                 "actions": ["block_gateway"]})
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/declarations", json=PASSCODE).status_code == 201
    assert admin.post("/api/v1/declarations/vpcp.passcode/assign", json={"all": True}).status_code == 200
    officer.close()
    admin.close()


def refusal_trials(base, verify, sims, tokens, samples: int) -> list[float]:
    """Per iPad: document readable, passcode-removed status report, next GET refused."""
    admin = httpx.Client(verify=verify, base_url=base, headers={"Authorization": f"Bearer {tokens['admin']}"})
    officer = httpx.Client(verify=verify, base_url=base, headers={"Authorization": f"Bearer {tokens['officer']}"})
    r = officer.post("/api/v1/documents", data={"title": "Báo cáo", "unit": "TTTH", "classification": "internal"},
                     files={"file": ("bao-cao.txt", "Báo cáo tháng.\n".encode() * 100)})
    assert r.status_code == 201, r.text
    doc = r.json()["id"]
    out = []
    for i, sim in enumerate(sims[:samples]):
        r = admin.post("/api/v1/leaders", json={"full_name": f"Lãnh đạo {i}", "title": "Vụ trưởng", "unit": "TTTH",
                                                "role": "director"})
        assert admin.put(f"/api/v1/devices/{sim.udid}/assignment", json={"leader_id": r.json()["id"]}).status_code == 200
        # As behind the office's TLS proxy (nginx, mTLS): the client certificate arrives in a header.
        pem = quote(sim.identity.public_bytes(serialization.Encoding.PEM).decode())
        with httpx.Client(verify=verify, base_url=base, timeout=30,
                          headers={"X-Client-Cert": pem, "X-Proxy-Secret": PROXY_SECRET}) as ipad:
            assert ipad.get(f"/docs/{doc}").status_code == 200, "a compliant iPad must read the document"
            removed = status_body(sim, {"passcode.is-present": False, "passcode.is-compliant": False})
            t0 = time.perf_counter()
            r = sim.client.put(f"{base}/mdm/checkin", content=removed[0], headers={"Mdm-Signature": removed[1]})
            refused = ipad.get(f"/docs/{doc}").status_code
            out.append(time.perf_counter() - t0)
            if r.status_code != 200 or refused != 403:
                raise SystemExit(f"bench FAILED: status {r.status_code}, gateway answered {refused} instead of 403")
            back = status_body(sim, {"passcode.is-present": True, "passcode.is-compliant": True})
            sim.client.put(f"{base}/mdm/checkin", content=back[0], headers={"Mdm-Signature": back[1]})
    admin.close()
    officer.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()

    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-ddm-") as tmp, fresh_postgres_database() as db_url:
        tmp = Path(tmp)
        instance = tmp / "instance"
        port = free_port()
        base = f"https://127.0.0.1:{port}"
        from ipad_mdm.config import load_settings
        from ipad_mdm.instance import open_instance

        inst = open_instance(load_settings(instance, database_url=db_url, base_url=base))
        topic, push_cert = inst.push_topic, inst.push_cert_path.read_bytes()
        inst.database.dispose()
        with start_apns_standin(tls=True, expected_topic=topic, client_ca_pem=push_cert) as apns:
            queue = f"ipad-mdm-bench-ddm-{os.getpid()}"
            env = dict(os.environ, DATABASE_URL=db_url, IPAD_MDM_INSTANCE=str(instance), IPAD_MDM_BASE_URL=base,
                       CELERY_BROKER_URL=REDIS_URL, IPAD_MDM_CELERY_QUEUE=queue, IPAD_MDM_APNS_URL=apns.url,
                       IPAD_MDM_APNS_CA=apns.server_ca_path, PYTHONPATH=str(ROOT),
                       IPAD_MDM_TLS_CERT=str(instance / "ca" / "server.pem"),
                       IPAD_MDM_TLS_KEY=str(instance / "secrets" / "server.key"),
                       IPAD_MDM_CLIENT_CERT_HEADER="X-Client-Cert", IPAD_MDM_PROXY_SECRET=PROXY_SECRET)
            procs = [
                gunicorn("ipad_mdm.wsgi:app", env, port, args.workers, tmp / "web.log"),
                subprocess.Popen([sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=threads",
                                  "--concurrency=4", "-Q", queue, "--without-gossip", "--without-mingle",
                                  "--loglevel=WARNING"], cwd=ROOT, env=env, stdout=open(tmp / "worker.log", "ab"),
                                 stderr=subprocess.STDOUT),
            ]
            try:
                verify = ssl.create_default_context(cafile=str(instance / "ca" / "ca.pem"))
                wait_http(f"{base}/healthz", verify)

                def token(role):
                    return json.loads(subprocess.run(
                        [str(BIN / "ipad-mdm"), "api-token", "create", "--name", f"bench-{role}", "--role", role,
                         "--json"], env=env, check=True, capture_output=True, text=True).stdout)["token"]

                tokens = {"admin": token("it_admin"), "officer": token("security_officer")}
                setup_world(env, base, verify, tokens)
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                t0 = time.perf_counter()
                sims = enroll_many(base, env, verify, args.devices, key, 8)
                enroll_s = time.perf_counter() - t0
                synced = sum(1 for s in sims if "vpcp.passcode" in s.ddm.declarations)
                if synced != len(sims):
                    raise SystemExit(f"bench FAILED: {len(sims) - synced} iPads did not receive their declarations")

                idle = []
                status = []
                for sim in sims:
                    body = plistlib.dumps({"UDID": sim.udid, "Status": "Idle"})
                    idle.append((body, sim.sign(body)))
                    status.append(status_body(sim, {"softwareupdate.install-state": "downloading"}))
                    status.append(status_body(sim, {"softwareupdate.install-state": "prepared"}))
                idle_rps, idle_lat, idle_err = hammer(f"{base}/mdm/connect", idle, args.seconds, args.concurrency, verify)
                before = stored_reports(env)
                st_rps, st_lat, st_err = hammer(f"{base}/mdm/checkin", status, args.seconds, args.concurrency, verify)
                stored = stored_reports(env) - before
                if stored != len(st_lat) or st_err:
                    raise SystemExit(f"bench FAILED: {len(st_lat)} status reports answered 200, {stored} stored, "
                                     f"{st_err} errors")

                quiet = refusal_trials(base, verify, sims, tokens, args.samples)
                load_result: dict = {}
                loader = threading.Thread(target=lambda: load_result.update(
                    r=hammer(f"{base}/mdm/connect", idle, args.seconds, max(args.concurrency - 2, 2), verify)))
                loader.start()
                time.sleep(1)
                busy = refusal_trials(base, verify, sims[args.samples:] or sims, tokens,
                                      min(args.samples, max(len(sims) - args.samples, 1)))
                loader.join()
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

    print(f"production stack: gunicorn x{args.workers} (TLS) + PostgreSQL + Redis/Celery; {args.devices} iPads "
          f"(DDM, passcode declaration synced); {args.concurrency} client threads, {args.seconds:.0f} s; "
          f"{os.cpu_count()} cores")
    print(f"enrollment incl. DDM sync: {enroll_s / args.devices * 1000:.0f} ms/iPad")
    print(f"{'request':38} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7}")
    print(f"{'Idle connect (signed)':38} {idle_rps:7d} {pct(idle_lat, 50):7.1f} {pct(idle_lat, 99):7.1f} {idle_err:7d}")
    print(f"{'status report (signed, incremental)':38} {st_rps:7d} {pct(st_lat, 50):7.1f} {pct(st_lat, 99):7.1f} "
          f"{st_err:7d}")
    print(f"ratio status/idle: {st_rps / max(idle_rps, 1):.2f}; status reports stored: {stored}")
    for name, xs in (("quiet", quiet), ("under idle check-in load", busy)):
        ms = [x * 1000 for x in xs]
        print(f"status report -> gateway refusal ({name}, {len(ms)} iPads): median {statistics.median(ms):.0f} ms, "
              f"p90 {sorted(ms)[int(0.9 * (len(ms) - 1))]:.0f} ms, worst {max(ms):.0f} ms")
    if "r" in load_result:
        rps, lat, err = load_result["r"]
        print(f"idle load alongside: {rps} req/s, p99 {pct(lat, 99):.1f} ms, errors {err}")


if __name__ == "__main__":
    main()
