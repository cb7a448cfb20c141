"""What the document gateway's decision costs on top of serving the file: per-request CPU.

One process, one server: GET /docs/<id> (certificate → identity + precomputed access state in one
query, classification and unit checks, the hash-chained audit append, streaming) and a plain
route of the same app serving the same bytes with the same headers, over the same TLS
connection with the same client certificate, in alternating blocks so both see the same machine.
Each request's CPU is measured in the server thread that handles it (time.thread_time from the
WSGI call to the response's close), so what the client or another process does is not counted.
The figure is the difference of the two paths' per-request CPU: mean, median and p99.

    .venv/bin/python bench/bench_gateway.py --requests 400 --size 200000 [--database-url URL | --sqlite]

On PostgreSQL (the production database, the default here) an allowed read is answered by
document_gateway.docs_fast; on SQLite by the full path through SQLAlchemy.

Checks the work was done: every gateway request answered 200 with the document's bytes and left
its row in the audit chain (counted), and the chain verifies afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Response  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from tests.conftest import start_live_server  # noqa: E402
from tests.test_gateway import api, enroll, ipad_client, make_unit, refresh, upload  # noqa: E402


class CpuMeter:
    """WSGI middleware: the CPU the serving thread spends on each request, by path kind."""

    def __init__(self, app):
        self.app = app
        self.samples: dict[str, list[float]] = {"plain": [], "gateway": []}
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        kind = "plain" if path.startswith("/bench/plain") else "gateway" if path.startswith("/docs/") else None
        t0 = time.thread_time()
        body = self.app(environ, start_response)
        if kind is None:
            return body
        meter = self

        class Measured:
            def __iter__(self):
                return iter(body)

            def close(self):
                if hasattr(body, "close"):
                    body.close()
                with meter._lock:
                    meter.samples[kind].append((time.thread_time() - t0) * 1000)

        return Measured()


def run(url_path: str, client, n: int, expect: bytes) -> None:
    for _ in range(n):
        r = client.get(url_path)
        if r.status_code != 200 or r.content != expect:
            raise SystemExit(f"bench: {url_path} answered {r.status_code} ({len(r.content)} bytes): the work was not done")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400, help="requests per path")
    ap.add_argument("--block", type=int, default=20, help="requests per alternating block")
    ap.add_argument("--size", type=int, default=200_000, help="document size in bytes")
    ap.add_argument("--database-url", default=None, help="default: a new PostgreSQL database on 127.0.0.1")
    ap.add_argument("--sqlite", action="store_true", help="the embedded default: a SQLite file in a temp folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    if args.sqlite:
        measure(args, tmp, f"sqlite:///{tmp / 'bench.sqlite3'}")
    elif args.database_url:
        measure(args, tmp, args.database_url)
    else:
        from tests.conftest import fresh_postgres_database

        with fresh_postgres_database() as url:
            measure(args, tmp, url)


def measure(args, tmp: Path, db: str) -> None:
    server = start_live_server(tmp, db, extra={"document_max_bytes": max(args.size * 2, 1_000_000)})
    holder: dict = {}

    # Registered before the first request (Flask forbids later): the same stored file, streamed the
    # same way (document_gateway.views._stream), same headers, no gate: "serving the file alone".
    def plain():
        from document_gateway.views import _stream

        path = server.app.extensions["document_gateway.store"].path_for(holder["sha256"])
        size = os.stat(path).st_size
        return Response(_stream(path, 0, size), mimetype="text/plain", direct_passthrough=True, headers={
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Length": str(size),
            "Content-Disposition": 'inline; filename="bench.txt"'})

    server.app.add_url_rule("/bench/plain", "bench_plain", plain)
    meter = CpuMeter(server.app.wsgi_app)
    server.app.wsgi_app = meter
    # The decision alone (certificate → identity + access state → verdict) and the audit append
    # (through SQLAlchemy: audit.record; on docs_fast: the row, the new head and COMMIT), each timed
    # in its thread. On docs_fast the lookup is in the statement that takes the chain head, so the
    # decision's figure there is gate.decide on the row it read.
    from document_gateway import audit as audit_module
    from document_gateway import audit_hot, gate

    decisions: list[float] = []
    appends: list[float] = []

    def timed(owner, name: str, into: list) -> None:
        real = getattr(owner, name)

        def measured(*a, **kw):
            t0 = time.thread_time()
            try:
                return real(*a, **kw)
            finally:
                into.append((time.thread_time() - t0) * 1000)

        setattr(owner, name, measured)

    timed(gate, "decide", decisions)
    timed(audit_module, "record", appends)
    timed(audit_hot.HeadTaken, "append", appends)
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
        holder["sha256"] = hashlib.sha256(content).hexdigest()
        ipad = ipad_client(server, tmp, sim)
        from document_gateway import GatewayAuditEvent, audit

        def audit_rows() -> int:
            with server.session() as s:
                return s.scalar(select(func.count()).select_from(GatewayAuditEvent))

        run("/bench/plain", ipad, 20, content)  # warm-up both paths
        run(f"/docs/{doc['id']}", ipad, 20, content)
        meter.samples = {"plain": [], "gateway": []}
        decisions.clear()
        appends.clear()
        rows_before = audit_rows()
        done = 0
        while done < args.requests:
            n = min(args.block, args.requests - done)
            run("/bench/plain", ipad, n, content)
            run(f"/docs/{doc['id']}", ipad, n, content)
            done += n
        written = audit_rows() - rows_before
        if written != args.requests:
            raise SystemExit(f"bench: {args.requests} gateway requests but {written} audit rows")
        with server.session() as s:
            status = audit.verify_chain(s, server.instance.audit_key)
        if not status.ok:
            raise SystemExit(f"bench: the audit chain does not verify after the run: {status}")

        plain, gated = meter.samples["plain"][-args.requests:], meter.samples["gateway"][-args.requests:]
        backend = "PostgreSQL" if db.startswith("postgresql") else "SQLite"
        print(f"document {args.size} bytes; {args.requests} requests per path in alternating blocks of {args.block}; "
              f"TLS with client certificate, one keep-alive connection; {backend}; CPU of the serving thread per request")
        print(f"{'CPU per request':<40}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}")
        for label, xs in (("plain route, same bytes", plain), ("gateway /docs/<id>", gated),
                          ("  of which the decision (gate.decide)", decisions),
                          ("  of which the audit append", appends)):
            print(f"{label:<40}{statistics.fmean(xs):>9.3f}{pct(xs, 50):>9.3f}{pct(xs, 99):>9.3f}")
        print(f"{'gateway over plain (decision, document,':<40}{statistics.fmean(gated) - statistics.fmean(plain):>9.3f}"
              f"{pct(gated, 50) - pct(plain, 50):>9.3f}{pct(gated, 99) - pct(plain, 99):>9.3f}")
        print(" audit append)")
        print(f"checked: {len(gated)} answers of {len(content)} bytes each, {written} audit rows, chain verifies")
        ipad.close()
        sim.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
