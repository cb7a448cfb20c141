"""How long does the scheduled compliance run take for N devices?

    .venv/bin/python bench/bench_compliance.py                  # 10,000 devices, SQLite file
    .venv/bin/python bench/bench_compliance.py --postgres       # also a fresh PostgreSQL database
    .venv/bin/python bench/bench_compliance.py --devices 50000

Synthetic devices (with inventory, a declarative status report of the size a real one has, and an
identity certificate) are inserted directly; then `compliance.engine.evaluate_all` runs seven times: the first run
(every device gets its first verdict and transition), five steady-state runs (nothing
changes: the every-5-minutes case; the first of them also pays for reading the rows
the first run has just written), and a run 25 h later where the ~10% failing
devices leave grace (transitions + notifications).
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, insert, select, text  # noqa: E402

from compliance import clock, engine  # noqa: E402
from compliance.models import DeviceVerdict, Policy, PolicyUnit  # noqa: E402
from ipad_mdm.notify import set_notifier  # noqa: E402
from compliance.action_specs import validate_actions  # noqa: E402
from compliance.rules import validate_rules  # noqa: E402
from ipad_mdm.db import Base, Database, utcnow  # noqa: E402
from ipad_mdm.packages import import_all_models  # noqa: E402
from ipad_mdm.hooks import Hooks  # noqa: E402
from ipad_mdm.models import Unit  # noqa: E402
from mdm.models import Device, IdentityCertificate  # noqa: E402

RULES = [
    {"kind": "min_os_version", "version": "17.0"}, {"kind": "passcode_present"}, {"kind": "passcode_compliant"},
    {"kind": "hardware_encryption"}, {"kind": "supervised"},
    {"kind": "required_profiles", "identifiers": ["vn.gov.vpcp.vpn"]},
    {"kind": "identity_certificate_valid", "not_expiring_within_days": 14},
    {"kind": "last_checkin_within_hours", "hours": 72}, {"kind": "not_in_lost_mode"}, {"kind": "mdm_profile_present"},
    {"kind": "disallowed_apps", "bundle_ids": ["com.example.game"]},
]


class _Quiet:
    def send(self, note):
        pass


def populate(db: Database, n: int) -> None:
    now = utcnow()
    with db.session() as s:
        units = [Unit(code=f"U{i}", name_vi=f"Đơn vị {i}") for i in range(10)]
        s.add_all(units)
        s.flush()
        s.add(Policy(name="office", rules=validate_rules(RULES),
                     actions=validate_actions(["notify", "cut_vpn", "block_gateway"]), grace_hours=24,
                     escalation_hours=48, assign_all=True))
        pilot = Policy(name="pilot", rules=validate_rules([{"kind": "min_os_version", "version": "18.0"}]),
                       actions=validate_actions(["lock_device"]),
                       grace_hours=12, escalation_hours=24)
        s.add(pilot)
        s.flush()
        s.add_all([PolicyUnit(policy_id=pilot.id, unit_id=u.id) for u in units[:3]])
        unit_ids = [u.id for u in units]
    profiles = [{"PayloadIdentifier": "vn.gov.vpcp.mdm.enroll"}, {"PayloadIdentifier": "vn.gov.vpcp.vpn"}]
    apps = [{"Identifier": "com.apple.mobilesafari"}, {"Identifier": "com.wireguard.ios"}]
    at = now.isoformat()
    # Every office iPad reports its status declaratively; the capabilities and declarations items
    # (which the rules do not read) make up most of a real report's 2.7 kB.
    status = {"device.operating-system.version": {"value": "18.1", "at": at},
              "passcode.is-present": {"value": True, "at": at}, "passcode.is-compliant": {"value": True, "at": at},
              "app.managed.list": {"value": [], "at": at},
              "management.client-capabilities": {"value": {"supported-versions": ["1.0.0"], "pad": "x" * 1200}, "at": at},
              "management.declarations": {"value": {"activations": [{"identifier": f"a{i}", "active": True,
                                                                        "valid": "valid", "server-token": "t" * 40}
                                                                       for i in range(6)]}, "at": at}}
    batch = 2000
    with db.engine.begin() as conn:
        for start in range(0, n, batch):
            rows = []
            for i in range(start, min(n, start + batch)):
                failing = i % 10 == 0
                rows.append(dict(
                    udid=f"BENCH-{i:08d}", serial_number=f"S{i:08d}", unit_id=unit_ids[i % len(unit_ids)],
                    enrollment_state="enrolled", os_version="18.1", is_supervised=True, lost_mode_enabled=False,
                    enrolled_at=now, last_seen_at=now, push_pending=False, push_failures=0, awaiting_configuration=False,
                    device_information={"OSVersion": "18.1"}, device_information_at=now,
                    security_info={"PasscodePresent": not failing, "PasscodeCompliant": True, "HardwareEncryptionCaps": 3},
                    security_info_at=now, profile_list=profiles, profile_list_at=now,
                    certificate_list=[], certificate_list_at=now, installed_applications=apps,
                    installed_applications_at=now, ddm_enabled_at=now, ddm_status_at=now,
                    # The failing tenth's report agrees with its SecurityInfo (no passcode).
                    ddm_status={**status, "passcode.is-present": {"value": not failing, "at": at}},
                ))
            conn.execute(insert(Device), rows)
        ids = [r[0] for r in conn.execute(select(Device.id).order_by(Device.id))]
        for start in range(0, len(ids), batch):
            conn.execute(insert(IdentityCertificate), [dict(
                serial=secrets.token_hex(16), sha256_fingerprint=secrets.token_hex(32), subject=f"CN={i}",
                not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=365), der=b"x",
                device_id=i, issued_at=now) for i in ids[start:start + batch]])


def run(label: str, url: str, n: int) -> None:
    db = Database(url)
    import_all_models()
    Base.metadata.create_all(db.engine)
    t0 = time.perf_counter()
    populate(db, n)
    print(f"[{label}] inserted {n} devices in {time.perf_counter() - t0:.1f}s")
    hooks = Hooks()
    start = utcnow()
    # Steady state five times, as the job runs every five minutes: the driver prepares a statement
    # on the server after five runs, and a plan that changes then shows only from the third run.
    steady = [(f"steady state, run {i}", start + dt.timedelta(minutes=5 * i)) for i in range(1, 6)]
    for name, at in (("first run", start), *steady, ("grace expiry (+25h)", start + dt.timedelta(hours=25))):
        clock.now = lambda at=at: at  # noqa: E731 - the engine's clock, as the tests patch it
        t0 = time.perf_counter()
        counts = engine.evaluate_all(db, hooks)
        elapsed = time.perf_counter() - t0
        counts.pop("push_device_ids", None)
        print(f"[{label}] {name:22s} {elapsed:7.2f}s  {n / elapsed:8.0f} devices/s  {counts}")
    with db.session() as s:
        states = dict(s.execute(text("SELECT state, count(*) FROM compliance_device_verdicts GROUP BY state")).all())
        assert sum(states.values()) == n and s.scalar(select(DeviceVerdict).limit(1)) is not None
    print(f"[{label}] verdicts: {states}")
    db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--postgres", action="store_true", help="also run on a fresh PostgreSQL database")
    ap.add_argument("--pg-admin", default=os.environ.get("IPAD_MDM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    set_notifier(_Quiet())
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", f"sqlite:///{tmp}/bench.sqlite3", args.devices)
    if args.postgres:
        name = f"ipad_mdm_bench_{secrets.token_hex(4)}"
        admin = create_engine(args.pg_admin, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run("postgresql", args.pg_admin.rsplit("/", 1)[0] + f"/{name}", args.devices)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
