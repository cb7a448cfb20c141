"""Monthly report time and peak memory for a large synthetic fleet.

    .venv/bin/python bench/bench_reports.py --devices 10000 --days 30            # PostgreSQL (production)
    .venv/bin/python bench/bench_reports.py --sqlite [--db PATH] [--regen]       # the embedded default

Generates (once; reused unless --regen) a SQLite file with N devices in 30 units over the
month 2026-10 and the month before: verdict transitions (1–3 failure episodes per device
and month), the five inventory answers a real iPad gives every day (DeviceInformation with an
OS release mid-month, SecurityInfo, InstalledApplicationList, CertificateList, ProfileList),
one identity certificate per device, one gateway decision per device-day, VPN cuts/restores
and lock commands for escalated episodes, takeover attempts — bulk-inserted with executemany
(every row of one insert has the same keys: a missing key would silently store NULL).
After the build it checks that every section of the report had data to work on. Then it builds the
monthly report (current + previous month, HTML, PDF, XLSX, CSV) twice, each in a fresh process:
"cold" (the previous month computed from its history) and "warm" (the previous month's frozen
figures reused, as on the 1st of every month once last month's report exists); prints wall
time, peak RSS (getrusage) and, with --tracemalloc, the Python heap peak.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RULES = ["min_os_version", "passcode_compliant", "required_profiles", "last_checkin_within_hours", "identity_certificate_valid"]
REASONS = ["verdict_non_compliant", "certificate_expired", "not_assigned", "grace_expired", "lost_mode"]


def generate(path: Path | str, devices: int, days: int, seed: int = 6) -> None:
    """Into a SQLite file (a Path) or an empty PostgreSQL database (a URL)."""
    from sqlalchemy import insert

    from compliance.models import VerdictTransition
    from document_gateway.models import GatewayAuditEvent
    from ipad_mdm.db import Database
    from ipad_mdm.packages import import_all_models
    from ipad_mdm.models import Unit
    from ipad_mdm.security_events import SecurityEvent
    from mdm.models import Command, Device, IdentityCertificate
    from reports.periods import Month
    from vpn.models import VpnEvent

    import_all_models()
    if isinstance(path, Path) and path.exists():
        path.unlink()
    db = Database(f"sqlite:///{path}" if isinstance(path, Path) else path)
    db.migrate()
    rng = random.Random(seed)
    month = Month(2026, 10)
    start = month.previous.start  # history covers the previous month too
    span = (month.start - start) + dt.timedelta(days=days)
    t0 = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(insert(Unit.__table__), [{"id": i + 1, "code": f"U{i:02d}", "name_vi": f"Đơn vị {i}", "name_en": f"Unit {i}",
                                               "stage": "general", "created_at": start} for i in range(30)])
        devs, trs, cmds, certs, vpn = [], [], [], [], []
        for d in range(1, devices + 1):
            unit = rng.randint(1, 30)
            enrolled = start - dt.timedelta(days=rng.randint(1, 60))
            devs.append({"id": d, "udid": f"UDID-{d:06d}", "unit_id": unit, "enrollment_state": "enrolled", "enrolled_at": enrolled,
                         "os_version": "18.1", "lost_mode_enabled": False, "awaiting_configuration": False, "push_pending": False,
                         "push_failures": 0})
            trs.append({"device_id": d, "udid": f"UDID-{d:06d}", "unit_id": unit, "from_state": None, "to_state": "compliant",
                        "at": enrolled, "trigger": "enrolled", "policy_versions": [], "failing_rules": [], "reasons_vi": [],
                        "reasons_en": [], "actions": []})
            t = start
            while True:
                t += dt.timedelta(hours=rng.expovariate(1 / (24 * 14)))
                if t >= start + span:
                    break
                rules = [{"rule": r} for r in rng.sample(RULES, rng.randint(1, 2))]
                base = {"device_id": d, "udid": f"UDID-{d:06d}", "unit_id": unit, "policy_versions": [], "reasons_vi": [],
                        "reasons_en": [], "actions": [], "trigger": "schedule"}
                trs.append({**base, "from_state": "compliant", "to_state": "grace", "at": t, "failing_rules": rules})
                fix = t + dt.timedelta(hours=rng.expovariate(1 / 40))
                if fix - t > dt.timedelta(hours=24):
                    nc = t + dt.timedelta(hours=24)
                    trs.append({**base, "from_state": "grace", "to_state": "non_compliant", "at": nc, "failing_rules": rules})
                    vpn.append({"device_id": d, "kind": "wireguard", "event": "cut", "reason": "compliance", "at": nc})
                    vpn.append({"device_id": d, "kind": "wireguard", "event": "restored", "reason": "compliance", "at": fix})
                    if fix - t > dt.timedelta(hours=96):
                        cmds.append({"uuid": f"L{d}-{len(cmds)}", "device_id": d, "request_type": "DeviceLock", "command_plist": b"",
                                     "status": "acknowledged", "requested_by": "compliance", "created_at": nc, "completed_at": nc,
                                     "attempts": 1, "result": {"Status": "Acknowledged"}})
                trs.append({**base, "from_state": "grace", "to_state": "compliant", "at": fix, "failing_rules": []})
                t = fix
            release = month.start + dt.timedelta(days=12)
            upgrade = release + dt.timedelta(days=rng.expovariate(1 / 6))
            for day in range(span.days):
                at = start + dt.timedelta(days=day, hours=rng.random() * 20)
                version = "18.1" if at >= upgrade else "18.0"
                answers = {"DeviceInformation": {"QueryResponses": {"OSVersion": version, "ProductName": "iPad13,18"}},
                           "SecurityInfo": {"SecurityInfo": {"PasscodePresent": True, "HardwareEncryptionCaps": 3}},
                           "InstalledApplicationList": {"InstalledApplicationList": [{"Identifier": "vn.gov.vanban"}]},
                           "CertificateList": {"CertificateList": [{"CommonName": f"UDID-{d:06d}"}]},
                           "ProfileList": {"ProfileList": [{"PayloadIdentifier": "vn.gov.mdm"}]}}
                for i, (request, answer) in enumerate(answers.items()):
                    cmds.append({"uuid": f"I{d}-{day}-{i}", "device_id": d, "request_type": request, "command_plist": b"",
                                 "status": "acknowledged", "requested_by": "inventory", "created_at": at, "completed_at": at,
                                 "attempts": 1, "result": answer})
            issued = enrolled
            certs.append({"serial": f"{d:032x}", "sha256_fingerprint": f"{d:064x}", "subject": f"CN={d}", "not_before": issued,
                          "not_after": issued + dt.timedelta(days=rng.randint(90, 400)), "der": b"x", "device_id": d,
                          "issued_at": issued})
        conn.execute(insert(Device.__table__), devs)
        conn.execute(insert(VerdictTransition.__table__), trs)
        for i in range(0, len(cmds), 50_000):
            conn.execute(insert(Command.__table__), cmds[i:i + 50_000])
        conn.execute(insert(SecurityEvent.__table__), [
            {"at": month.start + dt.timedelta(days=rng.randint(0, days - 1)), "severity": "critical", "kind": "device_takeover_attempt",
             "udid": f"UDID-{rng.randint(1, devices):06d}", "summary_vi": "Cố gắng chiếm quyền", "summary_en": "Takeover attempt",
             "details": {}} for _ in range(3)])
        conn.execute(insert(IdentityCertificate.__table__), certs)
        conn.execute(insert(VpnEvent.__table__), vpn)
        gw, seq = [], 0
        for day in range(span.days):
            for d in range(1, devices + 1):
                seq += 1
                deny = rng.random() < 0.05
                gw.append({"id": seq, "at": start + dt.timedelta(days=day, seconds=rng.randint(0, 86399)), "action": "view",
                           "decision": "deny" if deny else "allow", "reason_code": rng.choice(REASONS) if deny else "allowed",
                           "reason_vi": "", "reason_en": "", "http_status": 403 if deny else 200, "device_id": d,
                           "leader_unit_id": devs[d - 1]["unit_id"], "prev_hash": "0" * 64, "row_hash": f"{seq:064x}"})
            if len(gw) >= 50_000:
                conn.execute(insert(GatewayAuditEvent.__table__), gw)
                gw = []
        if gw:
            conn.execute(insert(GatewayAuditEvent.__table__), gw)
    db.dispose()
    print(json.dumps({"generated": str(path), "devices": devices, "transitions": len(trs), "commands": len(cmds),
                      "gateway_events": seq, "vpn_events": len(vpn), "seconds": round(time.perf_counter() - t0, 1)}))


def measure(url: str, use_tracemalloc: bool, cold: bool) -> None:
    from sqlalchemy import delete

    from ipad_mdm.db import Database
    from ipad_mdm.packages import import_all_models
    from reports import service
    from reports.models import MonthFiguresRecord

    import_all_models()
    db = Database(url)
    if cold:
        with db.session() as s:
            s.execute(delete(MonthFiguresRecord))
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    t0 = time.perf_counter()
    steps = []
    out = service.build(db, "monthly", "2026-10", "vi", ["html", "pdf", "xlsx", "csv"],
                        progress=lambda name: steps.append((name, round(time.perf_counter() - t0, 2))))
    elapsed = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the checks below add their own
    # The work was real: every section of the report had data (the OS section once ran on nothing).
    from reports.month import compute_month
    from reports.periods import Month

    with db.engine.connect() as conn:
        f = compute_month(conn, Month(2026, 10))
    for table in ("fleet", "compliance_daily", "compliance_units", "rules", "remediation_episodes", "os_spread",
                  "patch_latency", "certs_expiring", "gateway_reasons", "protective_events", "vpn_events", "incident_events"):
        assert len(f.tables[table]), f"section {table} had no data"
    assert f.kpis["patch_latency_mean_days"] is not None and len(f.tables["os_spread"]) >= 2, "OS section ran on nothing"
    assert f.kpis["compliance_rate"] is not None and 0 < f.kpis["compliance_rate"] < 1
    # Looked at as a person would: every PDF page rendered (pdftoppm) and carrying ink.
    import tempfile

    from PIL import Image, ImageStat

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "r.pdf").write_bytes(out["pdf"])
        subprocess.run(["pdftoppm", "-r", "40", "-png", str(Path(tmp) / "r.pdf"), str(Path(tmp) / "p")], check=True)
        pages = sorted(Path(tmp).glob("p-*.png"))
        assert pages and all(ImageStat.Stat(Image.open(p).convert("L")).var[0] > 50 for p in pages), "blank page"
    pages_count = len(pages)
    result = {"run": "cold" if cold else "warm", "backend": db.engine.dialect.name, "report_seconds": round(elapsed, 2),
              "steps": steps,
              "peak_rss_mib": round(rss, 1),
              "sizes_kib": {k: round(len(v) / 1024, 1) for k, v in out.items()}, "pdf_pages": pages_count}
    if use_tracemalloc:
        result["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--sqlite", action="store_true", help="the embedded default instead of PostgreSQL")
    ap.add_argument("--db", type=Path, default=None,
                    help="(--sqlite) keep the generated history here and reuse it (default: a fresh private temp folder)")
    ap.add_argument("--regen", action="store_true")
    ap.add_argument("--tracemalloc", action="store_true", help="also report the Python heap peak (slower)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args.measure, args.tracemalloc, args.cold)
        return

    def run(url: str) -> None:
        # Fresh processes, so peak RSS is the report's own and not the generator's.
        for cold in (True, False):
            cmd = [sys.executable, __file__, "--measure", url] + (["--tracemalloc"] if args.tracemalloc else [])
            subprocess.run(cmd + (["--cold"] if cold else []), check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    if not args.sqlite:
        from tests.conftest import fresh_postgres_database

        subprocess.run(["bash", str(ROOT / "scripts" / "services.sh")], check=True)
        with fresh_postgres_database() as url:
            generate(url, args.devices, args.days)
            run(url)
        return
    if args.db is None:
        import tempfile

        args.db = Path(tempfile.mkdtemp(prefix="ipad-mdm-reports-bench-")) / "reports.sqlite3"
    marker = args.db.with_suffix(".json")
    want = {"devices": args.devices, "days": args.days}
    if args.regen or not args.db.exists() or not marker.exists() or json.loads(marker.read_text()) != want:
        generate(args.db, args.devices, args.days)
        marker.write_text(json.dumps(want))
    run(f"sqlite:///{args.db}")


if __name__ == "__main__":
    main()
