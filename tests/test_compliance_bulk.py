"""The scheduled evaluation in set-based passes (compliance.bulk) decides exactly what the one
owner of verdicts, engine.evaluate_device, decides device by device — only faster.

Two identical fleets with varied inventory are evaluated at the same moments (first run, steady
state, grace expiry, escalation, after fixes): one by compliance.bulk.evaluate_all, one device by
device with evaluate_device. Every verdict and every transition must be the same.
"""
from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from sqlalchemy import func, insert, select, text

from compliance import bulk, clock, engine
from compliance.action_specs import validate_actions
from compliance.models import DeviceVerdict, Policy, VerdictTransition
from compliance.rules import validate_rules
from ipad_mdm.db import Base, Database, utcnow
from ipad_mdm.hooks import Hooks
from ipad_mdm.models import Unit
from ipad_mdm.packages import import_all_models
from mdm.models import Device, IdentityCertificate
from tests.conftest import fresh_postgres_database

RULES = [
    {"kind": "min_os_version", "version": "17.0"}, {"kind": "passcode_present"}, {"kind": "hardware_encryption"},
    {"kind": "supervised"}, {"kind": "required_profiles", "identifiers": ["vn.gov.vpcp.vpn"]},
    {"kind": "identity_certificate_valid", "not_expiring_within_days": 14},
    {"kind": "last_checkin_within_hours", "hours": 72}, {"kind": "not_in_lost_mode"},
    {"kind": "disallowed_apps", "bundle_ids": ["com.example.game"]},
]


def fleet(db: Database, n: int, now: dt.datetime) -> None:
    import_all_models()
    Base.metadata.create_all(db.engine)
    with db.session() as s:
        units = [Unit(code=f"U{i}", name_vi=f"Đơn vị {i}") for i in range(3)]
        s.add_all(units)
        s.flush()
        s.add(Policy(name="office", rules=validate_rules(RULES), actions=validate_actions(["notify", "block_gateway"]),
                     grace_hours=24, escalation_hours=48, assign_all=True))
        unit_ids = [u.id for u in units]
    rows = []
    for i in range(n):
        kind = i % 8  # 0: fine, 1: no passcode, 2: old iPadOS, 3: lost, 4: silent, 5: no SecurityInfo, 6: game, 7: expiring
        rows.append(dict(
            udid=f"BULK-{i:04d}", unit_id=unit_ids[i % 3], enrollment_state="enrolled",
            os_version="16.4" if kind == 2 else "18.1", is_supervised=True, lost_mode_enabled=kind == 3,
            enrolled_at=now, enrollment_completed_at=now - dt.timedelta(minutes=1),
            last_seen_at=now - dt.timedelta(hours=100 if kind == 4 else 1), push_pending=False,
            push_failures=0, awaiting_configuration=False,
            # Every eleventh never answered DeviceInformation (stored as JSON null): supervision unknown.
            device_information=None if i % 11 == 10 else {"OSVersion": "18.1"}, device_information_at=now,
            security_info=None if kind == 5 else {"PasscodePresent": kind != 1, "PasscodeCompliant": True,
                                                  "HardwareEncryptionCaps": 3},
            security_info_at=None if kind == 5 else now,
            profile_list=[{"PayloadIdentifier": "vn.gov.vpcp.vpn"}], profile_list_at=now,
            installed_applications=[{"Identifier": "com.example.game"}] if kind == 6 else [], installed_applications_at=now,
            ddm_status=_status_report(i, kind, now), ddm_status_at=now if i % 3 else None))
    with db.engine.begin() as conn:
        conn.execute(insert(Device), rows)
        ids = [r[0] for r in conn.execute(select(Device.id).order_by(Device.id))]
        conn.execute(insert(IdentityCertificate), [dict(
            serial=f"{i:x}", sha256_fingerprint=f"{i:064x}", subject=f"CN={i}", not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=7 if i % 8 == 7 else 365), der=b"x", device_id=i, issued_at=now)
            for i in ids])


def _status_report(i: int, kind: int, now: dt.datetime) -> dict | None:
    """A declarative status report for two devices in three: newer than SecurityInfo it decides the
    passcode (it lets a kind-1 device pass and fails every fourth fine one) and adds managed apps,
    beside items the rules do not read. Both evaluations must read it the same way."""
    if i % 3 == 0:
        return None
    later = (now + dt.timedelta(minutes=1)).isoformat()
    report = {"management.client-capabilities": {"value": {"supported-versions": ["1.0"], "pad": "x" * 2000},
                                                  "at": later},
              "management.declarations": {"value": {"activations": [], "configurations": []}, "at": later}}
    if kind == 1 or (kind == 0 and i % 4 == 1):
        report["passcode.is-present"] = {"value": kind == 1, "at": later}
    if (kind == 6 and i % 2) or (kind == 0 and i % 3 == 2):
        # Some fine devices report the disallowed game only here, not in InstalledApplicationList.
        report["app.managed.list"] = {"value": [{"identifier": "com.example.game", "state": "managed",
                                                 "short-version": "1.0", "version": "1"}], "at": later}
    return report


def snapshot(db: Database) -> tuple[list, list]:
    with db.session() as s:
        verdicts = [(v.device_id, v.state, v.since, v.evaluated_at, v.failing_since, v.grace_deadline, v.non_compliant_at,
                     v.escalation_deadline, v.failing_rules, v.reasons_vi, v.reasons_en, v.policy_versions, v.actions)
                    for v in s.scalars(select(DeviceVerdict).order_by(DeviceVerdict.device_id))]
        transitions = [(t.device_id, t.from_state, t.to_state, t.at, t.grace_deadline, t.escalation_deadline,
                        t.failing_rules, [a.get("action") for a in t.actions], t.actions_pending)
                       for t in s.scalars(select(VerdictTransition).order_by(VerdictTransition.device_id,
                                                                             VerdictTransition.id))]
    return verdicts, transitions


def one_by_one(db: Database, hooks: Hooks) -> None:
    with db.session() as s:
        for device in s.scalars(select(Device).where(Device.enrollment_state == "enrolled").order_by(Device.id)):
            engine.evaluate_device(s, hooks, device, trigger="schedule")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_bulk_evaluation_decides_exactly_what_evaluate_device_decides(tmp_path, monkeypatch, dialect):
    """On both databases: PostgreSQL's path differs (the confirmations of unchanged verdicts are
    written from another thread, the slice read is planned by another optimizer)."""
    with contextlib.ExitStack() as stack:
        if dialect == "sqlite":
            urls = [f"sqlite:///{tmp_path / 'bulk.sqlite3'}", f"sqlite:///{tmp_path / 'single.sqlite3'}"]
        else:
            urls = [stack.enter_context(fresh_postgres_database()) for _ in range(2)]
        _bulk_and_one_by_one(monkeypatch, *urls)


def _bulk_and_one_by_one(monkeypatch, bulk_url: str, single_url: str) -> None:
    start = utcnow()
    a, b = Database(bulk_url), Database(single_url)
    fleet(a, 96, start)
    fleet(b, 96, start)
    hooks = Hooks()
    moments = [start, start + dt.timedelta(minutes=5), start + dt.timedelta(hours=25),
               start + dt.timedelta(hours=25, minutes=5), start + dt.timedelta(hours=80)]
    counts, states = [], set()
    for i, at in enumerate(moments):
        monkeypatch.setattr(clock, "now", lambda at=at: at)
        if i == 3:  # some devices are fixed between two runs
            for db in (a, b):
                with db.session() as s:
                    for d in s.scalars(select(Device).where(Device.udid.in_(["BULK-0001", "BULK-0009", "BULK-0003"]))):
                        d.security_info = {"PasscodePresent": True, "PasscodeCompliant": True, "HardwareEncryptionCaps": 3}
                        d.lost_mode_enabled = False
                        d.security_info_at = utcnow()
        counts.append(bulk.evaluate_all(a, hooks))
        one_by_one(b, hooks)
        assert snapshot(a) == snapshot(b), f"bulk and single evaluation differ at moment {i}"
        states |= {v[1] for v in snapshot(a)[0]}
    # The comparison did its work: the steady run wrote nothing but evaluated_at, later runs moved some.
    assert counts[0]["changed"] == 96 and counts[1]["unchanged"] == 96 and counts[1]["transitions"] == 0
    assert counts[2]["transitions"] > 0 and counts[4]["transitions"] > 0
    assert {"compliant", "grace", "unknown", "non_compliant", "blocked"} <= states
    a.dispose()
    b.dispose()


def test_one_broken_device_is_skipped_not_the_office(tmp_path, monkeypatch, caplog):
    db = Database(f"sqlite:///{tmp_path / 'broken.sqlite3'}")
    fleet(db, 24, utcnow())
    with db.session() as s:
        broken_id = s.scalar(select(Device.id).where(Device.udid == "BULK-0005"))
    real = engine.facts_of

    def facts_of(device, *a, **kw):
        if device.id == broken_id:
            raise RuntimeError("corrupt inventory")
        return real(device, *a, **kw)

    monkeypatch.setattr(engine, "facts_of", facts_of)
    monkeypatch.setattr(bulk, "facts_of", facts_of)
    counts = bulk.evaluate_all(db, Hooks())
    assert counts["errors"] == 1 and counts["evaluated"] == 23
    with db.session() as s:
        assert s.get(DeviceVerdict, broken_id) is None  # nothing half-written
        assert s.scalar(select(DeviceVerdict).where(DeviceVerdict.device_id != broken_id).limit(1)) is not None
    assert "BULK-0005" in caplog.text
    db.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_bulk_evaluation_on_postgresql_matches_too(database_url, tmp_path, monkeypatch):
    start = utcnow()
    a, b = Database(database_url), Database(f"sqlite:///{tmp_path / 'single.sqlite3'}")
    fleet(a, 40, start)
    fleet(b, 40, start)
    for at in (start, start + dt.timedelta(hours=25), start + dt.timedelta(hours=80)):
        monkeypatch.setattr(clock, "now", lambda at=at: at)
        bulk.evaluate_all(a, Hooks())
        one_by_one(b, Hooks())
        va, ta = snapshot(a)
        vb, tb = snapshot(b)
        # Device ids are the same in both (inserted in the same order into empty tables).
        assert va == vb and ta == tb
    a.dispose()
    b.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_slice_is_planned_for_where_it_starts(database_url, monkeypatch):
    """The driver prepares the slice read on the server after five runs, and PostgreSQL may then use
    a generic plan that ignores where the slice starts (a steady run of 10,000 devices went from
    0.8 s to 1.9 s from its third run on). Each read runs with custom plans, in its own transaction,
    and the verdicts stay those of the one-by-one evaluation."""
    from sqlalchemy import event

    start = utcnow()
    db = Database(database_url)
    fleet(db, 40, start)
    monkeypatch.setattr(bulk, "READ_SLICE", 7)  # six slices a run: the fifth read is prepared
    monkeypatch.setattr(clock, "now", lambda: start)
    # Each statement sent, its first 60 characters, by connection: the confirmations of unchanged
    # verdicts go on a connection of their own, in a thread of their own, between the reads.
    seen: dict[int, list[str]] = {}

    @event.listens_for(db.engine, "before_cursor_execute")
    def record(conn, cursor, statement, params, context, executemany):
        seen.setdefault(id(cursor.connection), []).append(" ".join(statement.split())[:60])

    for _ in range(3):
        counts = bulk.evaluate_all(db, Hooks())
        assert counts["evaluated"] == 40 and counts["errors"] == 0
    reads = [(sent, i) for sent in seen.values() for i, sql in enumerate(sent) if sql.startswith("WITH slice AS")]
    assert len(reads) >= 18
    for sent, i in reads:
        assert sent[i - 1].startswith("SET LOCAL plan_cache_mode = force_custom_plan"), sent[i - 2:i + 1]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DeviceVerdict)) == 40
        # SET LOCAL ends with its transaction: the pool's connections plan as configured again.
        assert s.execute(text("SHOW plan_cache_mode")).scalar() == "auto"
    db.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_gateway_takes_the_verdicts_a_batch_wrote_without_reading_them_back(database_url, monkeypatch):
    """The gateway's access rows, refreshed as each write batch commits, are built from the verdicts
    that batch holds (compliance.verdicts.remember_written): the verdicts are read once per batch,
    and the access rows still say exactly what the verdicts say."""
    from sqlalchemy import event

    from document_gateway import service as gateway
    from document_gateway.models import DeviceAccess

    start = utcnow()
    db = Database(database_url)
    fleet(db, 40, start)
    hooks = Hooks()
    hooks.subscribe("verdict.changed", lambda session, device, **_: gateway.access_changed(session, device.id),
                    critical=True)
    verdict_reads = []

    def record(conn, cursor, statement, params, context, executemany):
        if statement.startswith("SELECT compliance_device_verdicts."):
            verdict_reads.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    for at in (start, start + dt.timedelta(hours=25)):  # first verdicts, then grace ends for some
        monkeypatch.setattr(clock, "now", lambda at=at: at)
        verdict_reads.clear()
        counts = bulk.evaluate_all(db, hooks, batch_size=15)
        batches = -(-counts["changed"] // 15)
        assert counts["changed"] and len(verdict_reads) == batches, (counts, len(verdict_reads))
        with db.session() as s:
            access = {r.device_id: (r.verdict_state, r.grace_deadline, list(r.reasons_en))
                      for r in s.scalars(select(DeviceAccess))}
            verdicts = {v.device_id: (v.state, v.grace_deadline if v.state == "grace" else None, list(v.reasons_en))
                        for v in s.scalars(select(DeviceVerdict))}
        assert len(verdicts) == 40 and access == verdicts
    event.remove(db.engine, "before_cursor_execute", record)
    db.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_scheduled_run_reads_an_inventory_again_only_when_its_content_changed(database_url, monkeypatch):
    """PostgreSQL: the run keeps what the rules read of each inventory with the inventory's number
    (devices.inventory_version, renewed by the database on every write of it: compliance.digests) and
    reads the inventory itself again only for a device whose number changed, whatever changed it: here
    a passcode removed by a statement that leaves every timestamp as it was. The verdict follows at
    once. The write pass keeps the reductions of the devices it evaluated, so neither the run after a
    first run nor the one after a changed verdict reads an inventory again."""
    from sqlalchemy import event

    from compliance.models import InventoryDigest

    start = utcnow()
    db = Database(database_url)
    fleet(db, 40, start)
    monkeypatch.setattr(clock, "now", lambda: start)
    hooks = Hooks()
    full_reads: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def record(conn, cursor, statement, params, context, executemany):
        if statement.startswith("SELECT devices.id, concat("):
            full_reads.append(statement)

    bulk.evaluate_all(db, hooks)  # the first verdicts: the write pass reads its devices itself
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(InventoryDigest)) == 40
        device_id = s.scalar(select(Device.id).where(Device.udid == "BULK-0000"))  # fine, no status report
        assert s.get(DeviceVerdict, device_id).state == "compliant"
        version = s.scalar(select(Device.inventory_version).where(Device.id == device_id))
        assert s.get(InventoryDigest, device_id).digest.endswith(f":{version}")
    counts = bulk.evaluate_all(db, hooks)
    assert counts["unchanged"] == 40 and full_reads == []
    with db.session() as s:
        s.execute(text("UPDATE devices SET last_seen_at = now() WHERE id = :id"), {"id": device_id})  # not inventory
        assert s.scalar(select(Device.inventory_version).where(Device.id == device_id)) == version
        s.execute(text("UPDATE devices SET security_info = CAST(:v AS json) WHERE id = :id"), {
            "v": '{"PasscodePresent": false, "PasscodeCompliant": true, "HardwareEncryptionCaps": 3}', "id": device_id})
        assert s.scalar(select(Device.inventory_version).where(Device.id == device_id)) > version
    counts = bulk.evaluate_all(db, hooks)
    assert len(full_reads) == 1 and counts["changed"] == 1 and counts["unchanged"] == 39
    with db.session() as s:
        verdict = s.get(DeviceVerdict, device_id)
        assert verdict.state == "grace" and [r["rule"] for r in verdict.failing_rules] == ["passcode_present"]
        assert s.get(InventoryDigest, device_id).reduced["security_info"]["PasscodePresent"] is False
    for _ in range(2):
        counts = bulk.evaluate_all(db, hooks)
        assert counts["unchanged"] == 40 and len(full_reads) == 1
    db.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_reduced_inventory_that_cannot_be_kept_does_not_fail_the_run(database_url, caplog):
    """The kept reductions are a cache: one for a device deleted meanwhile is refused by the database
    (its foreign key); the refusal is logged and nothing else is lost."""
    from compliance import digests
    from compliance.models import InventoryDigest

    db = Database(database_url)
    fleet(db, 2, utcnow())
    with db.session() as s:
        real = s.scalar(select(Device.id).order_by(Device.id).limit(1))
    digests.keep(db, utcnow(), [(real + 1000, "0" * 64, {"security_info": None})])
    assert "reduced inventories not kept" in caplog.text
    digests.keep(db, utcnow(), [(real, "1" * 64, {"security_info": None})])
    with db.session() as s:
        assert s.get(InventoryDigest, real).digest == "1" * 64
    db.dispose()
