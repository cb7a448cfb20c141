"""Revocation on the production stack: a status report says the passcode was removed — how long
until the gateway refuses the iPad's documents, and until its WireGuard peer is off the gateway,
with 10,000 peers configured; and is the device's own request slowed by it.

gunicorn (TLS, several workers) + PostgreSQL + Redis/Celery (the dispatcher runs the VPN work off
the request path). A sample of iPads enrolls over the real protocol (declarative passcode
declaration, WireGuard peer provisioned); the rest of the fleet is recorded as in bench/fleet.py,
each with its own WireGuard peer, and the server config is regenerated with all of them. The
WireGuard apply mode is `syncconf`; this machine has no WireGuard kernel module, so `wg` is a stub
that writes down when it was asked to remove which peer (and what `syncconf` was fed); the time
until that call is the time until a real gateway drops the peer.

Per sample iPad, assigned to a leader: GET a document (200); send the signed status report
"passcode removed"; measure (a) the status report's own latency, (b) until the gateway answers 403,
(c) until `wg set <iface> peer <key> remove` ran; then the report "passcode set" restores it.
Once quiet, once with idle check-ins hammering alongside.

    .venv/bin/python bench/bench_revocation.py --devices 10000 --samples 20

Exits non-zero when a refusal or a removal did not happen (within --timeout seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
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
from bench.bench_ddm import PASSCODE, PROXY_SECRET, status_body  # noqa: E402
from bench.fleet import add_fleet, add_peers  # noqa: E402
from bench.run_all import enroll_many, gunicorn, signed_idles, wait_http  # noqa: E402
from tests.apns_standin import start_apns_standin  # noqa: E402
from tests.conftest import REDIS_URL, free_port, fresh_postgres_database  # noqa: E402

WG_STUB = """#!/bin/sh
# Stand-in for `wg` (no WireGuard kernel module here): when, and what it was asked to do.
now=$(date +%s.%N)
if [ "$1" = syncconf ]; then cat > "{fed}"; fi
echo "$now $*" >> "{log}"
"""


def setup(base, verify, tokens) -> str:
    officer = httpx.Client(verify=verify, base_url=base, headers={"Authorization": f"Bearer {tokens['officer']}"})
    admin = httpx.Client(verify=verify, base_url=base, headers={"Authorization": f"Bearer {tokens['admin']}"})
    for p in officer.get("/api/v1/policies").json()["policies"]:
        officer.delete(f"/api/v1/policies/{p['id']}")
    r = officer.post("/api/v1/policies", json={"name": "Thu hồi", "rules": [{"kind": "passcode_present"}],
                                                 "grace_hours": 0, "assign": {"all": True},
                                                 "actions": ["block_gateway", "cut_vpn"]})
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/declarations", json=PASSCODE).status_code == 201
    assert admin.post("/api/v1/declarations/vpcp.passcode/assign", json={"all": True}).status_code == 200
    r = officer.post("/api/v1/documents", data={"title": "Báo cáo", "unit": "TTTH", "classification": "internal"},
                     files={"file": ("bao-cao.txt", "Báo cáo tháng.\n".encode() * 100)})
    assert r.status_code == 201, r.text
    officer.close()
    admin.close()
    return r.json()["id"]


def removed_at(log: Path, public_key: str) -> float | None:
    try:
        for line in log.read_text().splitlines():
            stamp, _, rest = line.partition(" ")
            if rest.startswith("set ") and f"peer {public_key} remove" in rest:
                return float(stamp)
    except FileNotFoundError:
        pass
    return None


def trials(base, verify, sims, peers, tokens, doc, wg_log: Path, timeout: float) -> list[tuple[float, float, float]]:
    admin = httpx.Client(verify=verify, base_url=base, headers={"Authorization": f"Bearer {tokens['admin']}"})
    out = []
    for i, sim in enumerate(sims):
        r = admin.post("/api/v1/leaders", json={"full_name": f"Lãnh đạo {sim.udid[:6]}", "unit": "TTTH",
                                                "role": "director"})
        assert admin.put(f"/api/v1/devices/{sim.udid}/assignment", json={"leader_id": r.json()["id"]}).status_code == 200
        pem = quote(sim.identity.public_bytes(serialization.Encoding.PEM).decode())
        with httpx.Client(verify=verify, base_url=base, timeout=30,
                          headers={"X-Client-Cert": pem, "X-Proxy-Secret": PROXY_SECRET}) as ipad:
            if ipad.get(f"/docs/{doc}").status_code != 200:
                raise SystemExit("bench FAILED: a compliant iPad could not read the document")
            body, sig = status_body(sim, {"passcode.is-present": False, "passcode.is-compliant": False})
            t0_wall, t0 = time.time(), time.perf_counter()
            r = sim.client.put(f"{base}/mdm/checkin", content=body, headers={"Mdm-Signature": sig})
            report = time.perf_counter() - t0
            refused = None
            while time.perf_counter() - t0 < timeout:
                if ipad.get(f"/docs/{doc}").status_code == 403:
                    refused = time.perf_counter() - t0
                    break
            gone = None
            while time.perf_counter() - t0 < timeout:
                at = removed_at(wg_log, peers[sim.udid])
                if at is not None:
                    gone = at - t0_wall
                    break
                time.sleep(0.005)
            if r.status_code != 200 or refused is None or gone is None:
                for log in (wg_log, wg_log.parent / "worker.log", wg_log.parent / "web.log"):
                    if log.exists():
                        print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
                raise SystemExit(f"bench FAILED: status report {r.status_code}, refused {refused}, peer removed {gone}")
            out.append((report, refused, gone))
            back = status_body(sim, {"passcode.is-present": True, "passcode.is-compliant": True})
            sim.client.put(f"{base}/mdm/checkin", content=back[0], headers={"Mdm-Signature": back[1]})
    admin.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=50, help="iPads enrolled over the real protocol")
    ap.add_argument("--samples", type=int, default=20, help="revocation trials, quiet and under load each")
    ap.add_argument("--seconds", type=float, default=10, help="length of the idle load")
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=10)
    args = ap.parse_args()
    args.sample = max(args.sample, 2 * args.samples)

    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp, fresh_postgres_database() as db_url:
        tmp = Path(tmp)
        instance = tmp / "instance"
        port = free_port()
        base = f"https://127.0.0.1:{port}"
        wg_log, wg_fed, stub = tmp / "wg.log", tmp / "wg.fed", tmp / "wg-stub"
        stub.write_text(WG_STUB.format(log=wg_log, fed=wg_fed))
        stub.chmod(0o755)
        vpn_env = dict(IPAD_MDM_WG_APPLY="syncconf", IPAD_MDM_WG_BIN=str(stub), IPAD_MDM_WG_CONFIG=str(tmp / "wg" / "wg0.conf"))
        os.environ.update(vpn_env)  # this process regenerates the config once, like the workers
        from ipad_mdm.config import load_settings
        from ipad_mdm.instance import open_instance
        from ipad_mdm.models import Unit

        inst = open_instance(load_settings(instance, database_url=db_url, base_url=base))
        with inst.database.session() as s:
            s.add(Unit(code="TTTH", name_vi="Trung tâm Tin học", name_en="IT Centre"))
        topic, push_cert = inst.push_topic, inst.push_cert_path.read_bytes()
        with start_apns_standin(tls=True, expected_topic=topic, client_ca_pem=push_cert) as apns:
            queue = f"ipad-mdm-bench-rev-{os.getpid()}"
            env = dict(os.environ, DATABASE_URL=db_url, IPAD_MDM_INSTANCE=str(instance), IPAD_MDM_BASE_URL=base,
                       CELERY_BROKER_URL=REDIS_URL, IPAD_MDM_CELERY_QUEUE=queue, IPAD_MDM_APNS_URL=apns.url,
                       IPAD_MDM_APNS_CA=apns.server_ca_path, PYTHONPATH=str(ROOT),
                       IPAD_MDM_TLS_CERT=str(instance / "ca" / "server.pem"),
                       IPAD_MDM_TLS_KEY=str(instance / "secrets" / "server.key"),
                       IPAD_MDM_CLIENT_CERT_HEADER="X-Client-Cert", IPAD_MDM_PROXY_SECRET=PROXY_SECRET, **vpn_env)
            web = gunicorn("ipad_mdm.wsgi:app", env, port, args.workers, tmp / "web.log")
            procs = [web, subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "ipad_mdm.tasks", "worker", "--pool=threads", "--concurrency=4",
                 "-Q", queue, "--without-gossip", "--without-mingle", "--loglevel=WARNING"],
                cwd=ROOT, env=env, stdout=open(tmp / "worker.log", "ab"), stderr=subprocess.STDOUT)]
            try:
                verify = ssl.create_default_context(cafile=str(instance / "ca" / "ca.pem"))
                wait_http(f"{base}/healthz", verify)

                def token(role):
                    return json.loads(subprocess.run(
                        [str(BIN / "ipad-mdm"), "api-token", "create", "--name", f"bench-{role}", "--role", role,
                         "--json"], env=env, check=True, capture_output=True, text=True).stdout)["token"]

                tokens = {"admin": token("it_admin"), "officer": token("security_officer")}
                doc = setup(base, verify, tokens)
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                sims = enroll_many(base, env, verify, args.sample, key, 8)
                fleet = add_fleet(inst, args.devices - args.sample, key, like_udid=sims[0].udid)
                add_peers(inst, [d.udid for d in fleet])
                from sqlalchemy import func, select

                from mdm import Device
                from vpn.models import WireGuardPeer
                from vpn.serverconf import sync_server_config

                t0 = time.perf_counter()
                result = sync_server_config(inst, force_apply=True)
                full_rewrite = time.perf_counter() - t0
                with inst.database.session() as s:
                    peers = dict(s.execute(select(Device.udid, WireGuardPeer.public_key).join(
                        WireGuardPeer, WireGuardPeer.device_id == Device.id)
                        .where(Device.udid.in_([x.udid for x in sims]))).all())
                    active = s.scalar(select(func.count()).select_from(WireGuardPeer).where(WireGuardPeer.state == "active"))
                if len(peers) != len(sims) or result.active_peers != active or active < args.devices:
                    raise SystemExit(f"bench FAILED: {len(peers)} sample peers, {result.active_peers} in the config, "
                                     f"{active} active")
                os.kill(web.pid, signal.SIGHUP)  # a server with this fleet, as after a restart
                time.sleep(3)
                wait_http(f"{base}/healthz", verify)

                quiet = trials(base, verify, sims[:args.samples], peers, tokens, doc, wg_log, args.timeout)
                idles = signed_idles(sims[2 * args.samples:] + fleet)
                baseline = hammer(f"{base}/mdm/connect", idles, 3, args.concurrency, verify)
                load: dict = {}
                loader = threading.Thread(target=lambda: load.update(
                    r=hammer(f"{base}/mdm/connect", idles, args.seconds, args.concurrency, verify)))
                loader.start()
                time.sleep(0.5)
                busy = trials(base, verify, sims[args.samples:2 * args.samples], peers, tokens, doc, wg_log, args.timeout)
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
                inst.database.dispose()

    print(f"production stack: gunicorn x{args.workers} (TLS) + PostgreSQL + Redis/Celery; {args.devices} iPads with "
          f"a WireGuard peer each ({args.sample} enrolled over the real protocol); apply mode syncconf; "
          f"{os.cpu_count()} cores")
    print(f"full server config rewrite with {result.active_peers} peers: {full_rewrite:.2f} s")
    print(f"{'status report -> ':18}{'':22}{'median ms':>10}{'p90 ms':>8}{'worst ms':>9}")
    for name, rows in (("quiet", quiet), ("under idle load", busy)):
        for label, idx in (("report answered", 0), ("gateway refuses", 1), ("WireGuard peer removed", 2)):
            ms = sorted(x[idx] * 1000 for x in rows)
            print(f"{name:18}{label:22}{statistics.median(ms):>10.0f}{ms[int(0.9 * (len(ms) - 1))]:>8.0f}{ms[-1]:>9.0f}")
    b_rps, b_lat, b_err = baseline
    l_rps, l_lat, l_err = load["r"]
    print(f"idle check-ins alone: {b_rps}/s p99 {pct(b_lat, 99):.1f} ms; during the revocations: {l_rps}/s "
          f"p99 {pct(l_lat, 99):.1f} ms; errors {b_err + l_err}")
    worst = max(max(x[1], x[2]) for x in quiet + busy)
    print(f"worst case, report -> refused and peer gone: {worst * 1000:.0f} ms (target < 1000 ms)")


if __name__ == "__main__":
    main()
