"""What the document gateway adds to serving a file: p50/p99 latency of GET /docs/<id>
(certificate check, cached decision + live epoch query, visibility, hash-chained audit append,
Range-capable streaming) against a plain Flask route serving the same bytes with the same
headers on the same server stack (werkzeug over TLS, same app, same client certificate).

    .venv/bin/python bench/bench_gateway.py --requests 400 --size 200000 [--database-url URL]

Prints figures; asserts nothing. Cold = every request re-decides (cache TTL 0).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Response  # noqa: E402

from tests.conftest import start_live_server  # noqa: E402
from tests.test_gateway import api, enroll, ipad_client, make_unit, refresh, upload  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]


def run(url_path: str, client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url_path)
        r.read()
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url_path, r.status_code, r.text[:200])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--size", type=int, default=200_000, help="document size in bytes")
    ap.add_argument("--database-url", default=None, help="default: SQLite file in a temp folder")
    ap.add_argument("--cache-seconds", type=float, default=30.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    db = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    server = start_live_server(tmp, db, extra={"gateway_cache_seconds": args.cache_seconds,
                                               "document_max_bytes": max(args.size * 2, 1_000_000)})
    holder: dict = {}

    # Registered before the first request (Flask forbids later): the same bytes, same headers, no gate.
    def plain():
        return Response(holder["bytes"], mimetype="text/plain", headers={
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Content-Disposition": 'inline; filename="bench.txt"'})

    server.app.add_url_rule("/bench/plain", "bench_plain", plain)
    try:
        admin, officer = api(server, "it_admin"), api(server, "security_officer")
        make_unit(server, "TTTH", "Trung tâm Tin học")
        r = officer.post("/api/v1/policies", json={"name": "Cơ bản", "rules": [{"kind": "passcode_present"}],
                                                   "grace_hours": 0, "assign": {"all": True}})
        assert r.status_code == 201, r.text
        sim = enroll(server)
        refresh(admin, sim)
        leader = admin.post("/api/v1/leaders", json={"full_name": "Nguyễn Văn An", "unit": "TTTH",
                                                      "role": "director"}).json()
        admin.put(f"/api/v1/devices/{sim.udid}/assignment", json={"leader_id": leader["id"]})
        content = (b"Bao cao an toan thong tin. " * (args.size // 27 + 1))[: args.size]
        holder["bytes"] = content
        doc = upload(officer, "bench.txt", content, title="Bench").json()
        ipad = ipad_client(server, tmp, sim)

        run("/bench/plain", ipad, 20)  # warm-up both paths
        run(f"/docs/{doc['id']}", ipad, 20)
        results = {}
        for label, path in (("plain", "/bench/plain"), ("gateway", f"/docs/{doc['id']}")):
            results[label] = percentiles(run(path, ipad, args.requests))
        server.app.extensions["document_gateway.cache"].ttl = 0  # every request re-decides
        server.app.extensions["document_gateway.cache"].clear()
        results["gateway (no cache)"] = percentiles(run(f"/docs/{doc['id']}", ipad, args.requests))

        backend = "PostgreSQL" if db.startswith("postgresql") else "SQLite"
        print(f"document {args.size} bytes, {args.requests} sequential requests each, TLS with client "
              f"certificate, one keep-alive connection (pooled client), {backend}")
        print(f"{'path':<22}{'p50 ms':>10}{'p99 ms':>10}{'added p50':>12}{'added p99':>12}")
        base50, base99 = results["plain"]
        for label, (p50, p99) in results.items():
            print(f"{label:<22}{p50:>10.2f}{p99:>10.2f}{p50 - base50:>12.2f}{p99 - base99:>12.2f}")
        ipad.close()
        sim.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
