"""Reports (issue #6): figures against a small hand-computed history, reproducibility,
rendered outputs (PDF pages via pdftoppm, HTML charts, XLSX), CLI and the live API.

The dataset (October 2026, previous month September 2026; local time Asia/Ho_Chi_Minh):

  D1 TCCB  compliant from 20 Sep all month                         in 31, compliant 31
  D2 TCCB  grace 10 Oct 12:00, non_compliant 12 Oct 12:00,
           compliant 13 Oct 12:00 (passcode_compliant)             in 31, compliant 28, episode 72 h
  D3 HC    grace 5 Oct 00:00 → compliant 6 Oct (min_os_version)    in 31, compliant 30, episode 24 h
           (September: grace 10 Sep 00:00 → compliant 11 Sep 12:00, episode 36 h)
  D4 HC    non_compliant since 25 Sep (passcode_present, min_os)   in 31, compliant 0  → never compliant
  D5 TTTH  enrolled 16 Oct: unknown 00:00, compliant 12:00         in 16, compliant 15.5
  D6 TTTH  grace 20 Oct, non_compliant 21 Oct, compliant 22 Oct
           (min_os_version), checked out 25 Oct 00:00              in 24, compliant 22, episode 48 h
  October: 126.5 / 164 device-days compliant; September: 80.5 / 88.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from compliance.models import VerdictTransition
from document_gateway.models import DeviceAssignment, GatewayAuditEvent, Leader
from ipad_mdm.db import Database
from ipad_mdm.packages import import_all_models
from ipad_mdm.models import Unit
from mdm.models import (
    CheckinEvent,
    Command,
    Device,
    EnrollmentToken,
    IdentityCertificate,
)
from reports import service
from reports.month import compute_month, month_over_month
from reports.periods import LOCAL_TZ, Month
from reports.yearly import Thresholds, compute_year
from vpn.models import VpnEvent

OCT, SEP = Month(2026, 10), Month(2026, 9)
ROOT = Path(__file__).resolve().parents[1]


def L(month: int, day: int, hour: float = 0) -> dt.datetime:
    """Local (Asia/Ho_Chi_Minh) wall time → UTC instant."""
    h, m = int(hour), int(round((hour % 1) * 60))
    return dt.datetime(2026, month, day, h, m, tzinfo=LOCAL_TZ).astimezone(dt.UTC)


# ------------------------------------------------------------------ dataset
def seed(db: Database) -> dict:
    with db.session() as s:
        units = {code: Unit(code=code, name_vi=vi, name_en=en, stage="pilot") for code, vi, en in (
            ("TCCB", "Vụ Tổ chức cán bộ", "Personnel and Organisation Department"),
            ("HC", "Vụ Hành chính", "Administration Department"),
            ("TTTH", "Trung tâm Tin học", "IT Center"))}
        s.add_all(units.values())
        s.flush()
        u = {k: v.id for k, v in units.items()}
        spec = {  # name: (unit, enrolled_at, state, checked_out_at, os now)
            "D1": ("TCCB", L(9, 20), "enrolled", None, "18.0"), "D2": ("TCCB", L(9, 20), "enrolled", None, "18.0"),
            "D3": ("HC", L(9, 1), "enrolled", None, "18.0"), "D4": ("HC", L(9, 25), "enrolled", None, "17.5"),
            "D5": ("TTTH", L(10, 16), "enrolled", None, "18.0"), "D6": ("TTTH", L(9, 1), "checked_out", L(10, 25), "18.0"),
        }
        dev = {}
        for name, (unit, enrolled, state, out, osv) in spec.items():
            d = Device(udid=f"UDID-{name}", serial_number=f"SN{name}", unit_id=u[unit], enrollment_state=state,
                       enrolled_at=enrolled, token_updated_at=enrolled, checked_out_at=out, os_version=osv)
            s.add(d)
            dev[name] = d
        s.flush()

        def tr(name, at, frm, to, rules=(), trigger="schedule"):
            d = dev[name]
            s.add(VerdictTransition(device_id=d.id, udid=d.udid, unit_id=d.unit_id, from_state=frm, to_state=to, at=at,
                                    trigger=trigger, failing_rules=[{"rule": r, "params": {}} for r in rules]))

        tr("D1", L(9, 20), None, "compliant", trigger="enrolled")
        tr("D2", L(9, 20), None, "compliant", trigger="enrolled")
        tr("D2", L(10, 10, 12), "compliant", "grace", ["passcode_compliant"])
        tr("D2", L(10, 12, 12), "grace", "non_compliant", ["passcode_compliant"])
        tr("D2", L(10, 13, 12), "non_compliant", "compliant")
        tr("D3", L(9, 1), None, "compliant", trigger="enrolled")
        tr("D3", L(9, 10), "compliant", "grace", ["min_os_version"])
        tr("D3", L(9, 11, 12), "grace", "compliant")
        tr("D3", L(10, 5), "compliant", "grace", ["min_os_version"])
        tr("D3", L(10, 6), "grace", "compliant")
        tr("D4", L(9, 25), None, "non_compliant", ["passcode_present", "min_os_version"], trigger="enrolled")
        tr("D5", L(10, 16), None, "unknown", trigger="enrolled")
        tr("D5", L(10, 16, 12), "unknown", "compliant")
        tr("D6", L(9, 1), None, "compliant", trigger="enrolled")
        tr("D6", L(10, 20), "compliant", "grace", ["min_os_version"])
        tr("D6", L(10, 21), "grace", "non_compliant", ["min_os_version"])
        tr("D6", L(10, 22), "non_compliant", "compliant")
        tr("D6", L(10, 25), "compliant", "non_compliant", ["mdm_profile_present"], trigger="checked_out")

        # Enrollment tokens for HC: one pending, one expired, one revoked, one used.
        for i, (created, expires, used, revoked) in enumerate((
                (L(10, 20), L(11, 20), None, None), (L(10, 1), L(10, 4), None, None),
                (L(10, 2), L(11, 30), None, L(10, 3)), (L(10, 15), L(10, 18), L(10, 16), None))):
            s.add(EnrollmentToken(token_sha256=f"{i:064d}", unit_id=u["HC"], created_at=created, expires_at=expires,
                                  challenge_used_at=used, revoked_at=revoked))
        la = Leader(full_name="Nguyễn Văn An", unit_id=u["TCCB"], role="director")
        lb = Leader(full_name="Trần Thị Bình", unit_id=u["HC"], role="director")
        s.add_all([la, lb])
        s.flush()
        s.add_all([DeviceAssignment(device_id=dev["D1"].id, leader_id=la.id, assigned_at=L(9, 21)),
                   DeviceAssignment(device_id=dev["D2"].id, leader_id=la.id, assigned_at=L(9, 21), returned_at=L(10, 15)),
                   DeviceAssignment(device_id=dev["D3"].id, leader_id=lb.id, assigned_at=L(9, 2))])
        s.add(CheckinEvent(device_id=dev["D6"].id, udid="UDID-D6", message_type="CheckOut", at=L(10, 25)))

        def info(name, at, version):
            s.add(Command(uuid=str(uuid.uuid4()), device_id=dev[name].id, request_type="DeviceInformation",
                          command_plist=b"", status="acknowledged", created_at=at, completed_at=at,
                          result={"QueryResponses": {"OSVersion": version}}))

        for name, at, version in (("D3", L(9, 1), "17.6"), ("D6", L(9, 1), "17.6"), ("D1", L(9, 20), "17.6"),
                                  ("D2", L(9, 20), "17.6"), ("D4", L(9, 25), "17.5"), ("D1", L(10, 8), "18.0"),
                                  ("D2", L(10, 10), "18.0"), ("D6", L(10, 12), "18.0"), ("D3", L(10, 18), "18.0"),
                                  ("D5", L(10, 16), "18.0"), ("D4", L(10, 20), "17.5")):
            info(name, at, version)
        for name, rt, at, status in (("D4", "DeviceLock", L(10, 3), "acknowledged"),
                                     ("D4", "EnableLostMode", L(10, 3, 1), "acknowledged"),
                                     ("D6", "EraseDevice", L(10, 26), "queued")):
            s.add(Command(uuid=str(uuid.uuid4()), device_id=dev[name].id, request_type=rt, command_plist=b"",
                          status=status, created_at=at, completed_at=at if status == "acknowledged" else None,
                          requested_by="compliance"))

        end = OCT.end
        for i, (name, issued, not_after) in enumerate((
                ("D1", L(9, 20), end + dt.timedelta(days=20)), ("D2", L(9, 20) - dt.timedelta(days=355), L(10, 10)),
                ("D2", L(10, 8), L(10, 8) + dt.timedelta(days=365)), ("D3", L(9, 1), end + dt.timedelta(days=45)),
                ("D4", L(9, 25), L(9, 25) + dt.timedelta(days=365)), ("D5", L(10, 16), L(10, 16) + dt.timedelta(days=365)),
                ("D6", L(9, 1), end + dt.timedelta(days=5)))):
            s.add(IdentityCertificate(serial=f"{i:032x}", sha256_fingerprint=f"{i:064x}", subject=f"CN={name}",
                                      not_before=issued, not_after=not_after, der=b"x", device_id=dev[name].id, issued_at=issued))

        gw = [("allow", "allowed", "D1", L(10, 1, 0.5)), *[("allow", "allowed", "D1", L(10, 2 + i, 9)) for i in range(5)],
              *[("allow", "allowed", "D3", L(10, 7 + i, 9)) for i in range(3)], ("allow", "allowed", "D3", L(10, 31, 23.5)),
              *[("deny", "verdict_non_compliant", "D4", L(10, 4 + i, 10)) for i in range(5)],
              ("deny", "certificate_expired", "D6", L(10, 26, 8)), ("deny", "certificate_expired", "D6", L(10, 27, 8)),
              ("deny", "not_assigned", "D5", L(10, 17, 8)),
              ("allow", "allowed", "D1", L(11, 1, 0.5)),  # 31 Oct 17:30 UTC: November in local time
              *[("allow", "allowed", "D1", L(9, 22 + i, 9)) for i in range(4)],
              *[("deny", "verdict_non_compliant", "D4", L(9, 26 + i, 9)) for i in range(2)]]
        leader_of = {"D1": la, "D3": lb}
        for i, (decision, code, name, at) in enumerate(gw, 1):
            leader = leader_of.get(name)
            s.add(GatewayAuditEvent(id=i, at=at, action="view", decision=decision, reason_code=code, reason_vi=code,
                                    reason_en=code, http_status=200 if decision == "allow" else 403,
                                    device_udid=f"UDID-{name}", device_id=dev[name].id,
                                    leader_id=leader.id if leader else None, leader_unit_id=leader.unit_id if leader else None,
                                    prev_hash="0" * 64, row_hash=f"{i:064x}"))
        for name, event, at in (("D4", "cut", L(9, 25)), ("D6", "cut", L(10, 21)), ("D6", "restored", L(10, 22))):
            s.add(VpnEvent(device_id=dev[name].id, kind="wireguard", event=event, reason="compliance", by="compliance", at=at))
    return {"units": u}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """The hand-checked month, on SQLite (embedded default) and PostgreSQL (production)."""
    import contextlib

    from tests.conftest import fresh_postgres_database

    import_all_models()
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(fresh_postgres_database())
        else:
            url = f"sqlite:///{tmp_path / 'reports.sqlite3'}"
        database = Database(url)
        database.migrate()
        seed(database)
        yield database
        database.dispose()


def figures(db, month=OCT):
    with db.engine.connect() as conn:
        return compute_month(conn, month)


# ------------------------------------------------------------------ figures
def test_month_boundaries_are_local_midnight():
    assert OCT.start == dt.datetime(2026, 9, 30, 17, tzinfo=dt.UTC)
    assert OCT.end == dt.datetime(2026, 10, 31, 17, tzinfo=dt.UTC)
    assert len(OCT.days) == 31 and len(OCT.day_edges) == 32
    assert Month.parse("2026-01").previous == Month(2025, 12)


def test_compliance_rate_daily_and_per_unit(db):
    f = figures(db)
    assert f.kpis["device_days"] == pytest.approx(164)
    assert f.kpis["compliance_rate"] == pytest.approx(126.5 / 164)
    daily = f.tables["compliance_daily"].set_index("date")
    expected = {"2026-10-01": 4 / 5, "2026-10-05": 3 / 5, "2026-10-10": 3.5 / 5, "2026-10-11": 3 / 5, "2026-10-12": 3 / 5,
                "2026-10-13": 3.5 / 5, "2026-10-15": 4 / 5, "2026-10-16": 4.5 / 6, "2026-10-20": 4 / 6, "2026-10-21": 4 / 6,
                "2026-10-22": 5 / 6, "2026-10-25": 4 / 5, "2026-10-31": 4 / 5}
    for day, rate in expected.items():
        assert daily.loc[day, "rate"] == pytest.approx(rate), day
    assert daily.loc["2026-10-16", "unknown"] == pytest.approx(0.5)
    assert daily.loc["2026-10-11", "grace"] == pytest.approx(1)
    assert daily["device_days"].sum() == pytest.approx(164)
    units = f.tables["compliance_units"].set_index("unit_code")
    assert units.loc["TCCB", "rate"] == pytest.approx(59 / 62)
    assert units.loc["HC", "rate"] == pytest.approx(30 / 62)
    assert units.loc["TTTH", "rate"] == pytest.approx(37.5 / 40)
    assert units.loc["TTTH", "devices"] == 2


def test_rules_never_compliant_and_remediation(db):
    f = figures(db)
    rules = f.tables["rules"].set_index("rule")
    assert rules.loc["min_os_version", "device_days"] == pytest.approx(34)  # D4 31 + D3 1 + D6 2
    assert rules.loc["passcode_present", "device_days"] == pytest.approx(31)
    assert rules.loc["passcode_compliant", "device_days"] == pytest.approx(3)
    assert rules.loc["min_os_version", "devices"] == 3
    assert rules.loc["min_os_version", "share"] == pytest.approx(34 / 164)
    assert "mdm_profile_present" not in rules.index  # the check-out took D6 out of scope
    assert list(rules.index) == ["min_os_version", "passcode_present", "passcode_compliant"]
    never = f.tables["never_compliant"]
    assert never["udid"].tolist() == ["UDID-D4"] and never.loc[0, "unit_code"] == "HC"
    assert f.kpis["never_compliant"] == 1
    eps = f.tables["remediation_episodes"]
    assert sorted(eps["hours"].tolist()) == [24, 48, 72]
    assert f.kpis["remediation_mean_hours"] == pytest.approx(48)
    assert f.kpis["remediation_p90_hours"] == pytest.approx(72)  # nearest rank: 3rd of 3
    assert f.kpis["open_episodes"] == 1  # D4
    ru = f.tables["remediation_units"].set_index("unit_code")
    assert ru.loc["TCCB", "mean_hours"] == 72 and ru.loc["HC", "mean_hours"] == 24 and ru.loc["TTTH", "p90_hours"] == 48


def test_fleet_os_certificates_gateway_actions_vpn(db):
    f = figures(db)
    fleet = f.tables["fleet"].set_index("unit_code")
    assert fleet.loc["TCCB", ["enrolled", "handed_over", "pending"]].tolist() == [2, 1, 0]
    assert fleet.loc["HC", ["enrolled", "handed_over", "pending"]].tolist() == [2, 1, 1]
    assert fleet.loc["TTTH", ["enrolled", "new_in_month", "checked_out_in_month"]].tolist() == [1, 1, 1]
    assert (f.kpis["fleet_enrolled"], f.kpis["fleet_pending"], f.kpis["fleet_handed_over"]) == (5, 1, 2)

    spread = f.tables["os_spread"]
    assert spread[["os_version", "devices"]].values.tolist() == [["18.0", 4], ["17.5", 1]]
    lat = f.tables["patch_latency"].set_index("os_version")
    assert lat.loc["18.0", "eligible"] == 4 and lat.loc["18.0", "updated"] == 3
    assert lat.loc["18.0", "mean_days"] == pytest.approx(16 / 3) and lat.loc["18.0", "p90_days"] == pytest.approx(10)
    assert lat.loc["18.0", "still_behind"] == 1
    assert f.kpis["patch_latency_mean_days"] == pytest.approx(16 / 3)
    assert f.kpis["devices_behind_newest_os"] == 1

    assert (f.kpis["certs_expiring_30d"], f.kpis["certs_expiring_60d"], f.kpis["certs_expired"]) == (1, 2, 0)
    assert f.tables["certs_expiring"]["udid"].tolist() == ["UDID-D1", "UDID-D3"]  # D6 left the fleet
    ren = f.tables["cert_renewals"]
    assert ren["udid"].tolist() == ["UDID-D2"] and bool(ren.loc[0, "late"]) and ren.loc[0, "days_before_expiry"] == pytest.approx(2)

    # 31 Oct 23:30 local counts in October, 1 Nov 00:30 local (still 31 Oct in UTC) does not.
    assert (f.kpis["gateway_allowed"], f.kpis["gateway_denied"]) == (10, 8)
    reasons = f.tables["gateway_reasons"]
    deny = reasons[reasons["decision"] == "deny"].set_index("reason_code")["count"].to_dict()
    assert deny == {"verdict_non_compliant": 5, "certificate_expired": 2, "not_assigned": 1}
    gd = f.tables["gateway_daily"].set_index("date")
    assert gd.loc["2026-10-01", "allow"] == 1 and gd.loc["2026-10-31", "allow"] == 1

    actions = f.tables["protective_actions"].set_index("request_type")
    assert actions.loc["DeviceLock", "total"] == 1 and actions.loc["EnableLostMode", "acknowledged"] == 1
    assert actions.loc["EraseDevice", "acknowledged"] == 0 and actions.loc["DisableLostMode", "total"] == 0
    assert (f.kpis["device_locks"], f.kpis["lost_mode_enabled"], f.kpis["erasures"]) == (1, 1, 1)
    assert (f.kpis["vpn_cuts"], f.kpis["vpn_restores"], f.kpis["vpn_devices_cut"]) == (1, 1, 1)
    assert f.kpis["vpn_mean_cut_hours"] == pytest.approx(24)


def test_month_over_month(db):
    cur, prev = figures(db, OCT), figures(db, SEP)
    assert prev.kpis["device_days"] == pytest.approx(88)
    assert prev.kpis["compliance_rate"] == pytest.approx(80.5 / 88)
    assert prev.kpis["remediation_mean_hours"] == pytest.approx(36)
    mom = month_over_month(cur, prev).set_index("indicator")
    assert mom.loc["compliance_rate", "change"] == pytest.approx((126.5 / 164 - 80.5 / 88) * 100)  # percentage points
    assert mom.loc["remediation_mean_hours", "change"] == pytest.approx(12)
    assert mom.loc["gateway_denied", ["value", "previous", "change"]].tolist() == [8, 2, 6]
    assert mom.loc["vpn_cuts", ["value", "previous", "change"]].tolist() == [1, 1, 0]
    assert mom.loc["fleet_enrolled", "change"] == 0


def test_reproducible_tables_and_files(db):
    a, b = figures(db), figures(db)
    assert a.kpis == b.kpis
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    out1 = service.build(db, "monthly", "2026-10", "vi", ["pdf", "xlsx", "csv", "html"])
    out2 = service.build(db, "monthly", "2026-10", "vi", ["pdf", "xlsx", "csv", "html"])
    for fmt in out1:
        assert hashlib.sha256(out1[fmt]).hexdigest() == hashlib.sha256(out2[fmt]).hexdigest(), fmt
    from openpyxl import load_workbook

    def values(data):
        wb = load_workbook(io.BytesIO(data))
        return {ws.title: [list(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}

    v = values(out1["xlsx"])
    assert v == values(out2["xlsx"])
    assert "Tuân thủ theo ngày" in v and "Tóm tắt" in v
    daily = v["Tuân thủ theo ngày"]
    assert daily[0][0] == "Ngày" and daily[1][0] == "2026-10-01" and daily[1][-1] == pytest.approx(80.0)
    with zipfile.ZipFile(io.BytesIO(out1["csv"])) as z:
        names = z.namelist()
        assert "05_compliance_daily.csv" in names and "03_trace.csv" in names
        assert z.read("05_compliance_daily.csv").decode("utf-8-sig").startswith("Ngày,")


def _pdf_pages(pdf: bytes, tmp_path: Path) -> list[Path]:
    src = tmp_path / "r.pdf"
    src.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(src), str(tmp_path / "page")], check=True)
    return sorted(tmp_path.glob("page-*.png"))


def _not_blank(png: Path) -> bool:
    from PIL import Image, ImageStat

    img = Image.open(png).convert("L")
    return ImageStat.Stat(img).var[0] > 50


def test_pdf_renders_with_vietnamese_font(db, tmp_path):
    out = service.build(db, "monthly", "2026-10", "vi", ["pdf"])
    pdf = out["pdf"]
    assert pdf.startswith(b"%PDF") and b"LiberationSerif" in pdf
    pages = _pdf_pages(pdf, tmp_path)
    assert 4 <= len(pages) <= 30
    assert all(_not_blank(p) for p in pages)
    txt = subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True).stdout
    if txt:  # poppler-utils ships pdftotext next to pdftoppm
        assert "Đánh giá hiệu quả các biện pháp bảo đảm an toàn thông tin" in txt
        assert "Tỷ lệ tuân thủ" in txt and "77,13 %" in txt


def test_html_has_charts_and_vietnamese_headings_and_english_variant(db):
    vi = service.build(db, "monthly", "2026-10", "vi", ["html"])["html"].decode()
    assert '<html lang="vi">' in vi
    assert "Đánh giá hiệu quả các biện pháp bảo đảm an toàn thông tin trên thiết bị di động tháng 10 năm 2026" in vi
    assert "3. Tỷ lệ tuân thủ" in vi and "Vụ Tổ chức cán bộ" in vi and "Trung tâm Tin học" in vi
    assert vi.count('src="data:image/png;base64,') >= 4
    assert "giờ Việt Nam" in vi and "77,13 %" in vi
    en = service.build(db, "monthly", "2026-10", "en", ["html"])["html"].decode()
    assert '<html lang="en">' in en and "Compliance rate" in en and "Personnel and Organisation Department" in en
    assert "77.13%" in en and "SOCIALIST REPUBLIC OF VIET NAM" in en
    assert "Tỷ lệ tuân thủ" not in en


def test_yearly_trends_and_recommendations(db, tmp_path):
    with db.engine.connect() as conn:
        y = compute_year(conn, 2026, Thresholds(rule_share_pct=5, slow_remediation_hours=60, deny_reason_min=3,
                                                vpn_cuts_per_100=10, late_renewal_pct=10))
    tr = y.tables["trends"].set_index("month")
    assert tr.loc["2026-10", "compliance_rate"] == pytest.approx(126.5 / 164)
    assert tr.loc["2026-09", "compliance_rate"] == pytest.approx(80.5 / 88)
    assert pd.isna(tr.loc["2026-03", "compliance_rate"])
    # States hold until the next transition: November (5 devices × 30 days, D4 failing) and
    # December (5 × 31) continue October's end state.
    assert tr.loc["2026-11", "compliance_rate"] == pytest.approx(120 / 150)
    assert y.kpis["compliance_rate"] == pytest.approx((126.5 + 80.5 + 120 + 124) / (164 + 88 + 150 + 155))
    codes = [(r["code"], r["subject"]) for r in y.recommendations]
    assert ("compliance_target", "") in codes
    assert ("rule_share", "min_os_version") in codes and ("rule_share", "passcode_present") in codes
    assert ("rule_share", "passcode_compliant") not in codes  # 3 / 557 device-days ≈ 0.5 %
    assert ("slow_remediation", "TCCB") in codes  # 72 h > 60 h
    assert ("late_renewals", "") in codes
    assert ("deny_reason", "verdict_non_compliant") in codes
    assert ("vpn_cuts", "") in codes  # 2 cuts / 5 devices = 40 per 100
    rec = next(r for r in y.recommendations if r["subject"] == "min_os_version")
    assert rec["text_vi"].startswith("Tăng cường") and "%" in rec["evidence_vi"]
    out = service.build(db, "yearly", "2026", "vi", ["pdf", "html"], thresholds=Thresholds(deny_reason_min=3))
    html = out["html"].decode()
    assert "ĐỀ XUẤT TĂNG CƯỜNG" in html and "Căn cứ" in html and html.count("data:image/png") >= 3
    assert len(_pdf_pages(out["pdf"], tmp_path)) >= 2


def test_thresholds_from_env():
    th = Thresholds.from_env({"IPAD_MDM_REPORT_RULE_SHARE_PCT": "12.5", "IPAD_MDM_REPORT_LATE_RENEWAL_DAYS": "10"})
    assert th.rule_share_pct == 12.5 and th.late_renewal_days == 10 and th.slow_remediation_hours == 72


def test_periodic_job_is_idempotent(db, tmp_path):
    from types import SimpleNamespace

    from sqlalchemy import func, select

    from reports.models import Report

    inst = SimpleNamespace(database=db, settings=SimpleNamespace(instance_dir=tmp_path, celery_broker_url=None))
    assert service.ensure_previous_month(inst, L(11, 1, 0.5)) == []  # before the 1-hour delay
    ran = service.ensure_previous_month(inst, L(11, 1, 2))
    assert [(r["period"], r["status"]) for r in ran] == [("2026-10", "done")]
    assert service.ensure_previous_month(inst, L(11, 1, 3)) == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Report)) == 1
        row = s.scalar(select(Report))
        assert set(row.files) == {"html", "pdf", "xlsx", "csv"}
        for meta in row.files.values():
            assert hashlib.sha256((tmp_path / meta["path"]).read_bytes()).hexdigest() == meta["sha256"]


# ------------------------------------------------------------------ CLI
def test_cli_monthly_to_output_dir(db, tmp_path):
    from reports.cli import report

    inst_dir = tmp_path / "inst"
    inst_dir.mkdir()
    env = {"DATABASE_URL": db.url}
    out = tmp_path / "out"
    res = CliRunner().invoke(report, ["monthly", "--month", "2026-10", "--format", "pdf,xlsx", "--output", str(out),
                                      "--json", "--instance", str(inst_dir)], env=env)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data["files"]) == {"pdf", "xlsx"}
    assert (out / "bao-cao-thang-2026-10-vi.pdf").read_bytes().startswith(b"%PDF")


def test_cli_subprocess_with_progress_and_store(db, tmp_path):
    inst_dir = tmp_path / "inst"
    env = {**os.environ, "DATABASE_URL": db.url, "IPAD_MDM_INSTANCE": str(inst_dir)}
    exe = Path(sys.executable).parent / "ipad-mdm"  # the CLI of the interpreter running the tests
    cmd = [str(exe), "report"]
    res = subprocess.run(cmd + ["monthly", "--month", "2026-10", "--format", "pdf,csv", "--lang", "en", "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["status"] == "done" and set(data["files"]) == {"pdf", "csv"}
    assert Path(data["paths"]["pdf"]).is_file() and str(inst_dir / "reports" / "monthly" / "2026-10" / "en") in data["paths"]["pdf"]
    assert "monthly 2026-10 en" in res.stderr  # tqdm progress bar on stderr
    bad = subprocess.run(cmd + ["monthly", "--month", "2026-13"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode != 0 and "month" in bad.stderr


# ------------------------------------------------------------------ API
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_api_generate_list_status_download(server):
    seed(server.instance.database)
    officer = {"Authorization": f"Bearer {server.api_token('security_officer')}"}
    auditor = {"Authorization": f"Bearer {server.api_token('auditor')}"}
    with server.http(headers=officer) as c, server.http(headers=auditor) as a:
        assert a.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-10"}).status_code == 403
        assert c.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-13"}).status_code == 400
        assert c.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-10", "formats": ["doc"]}).status_code == 400
        r = c.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-10", "formats": ["pdf", "xlsx"]})
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        assert r.json()["status"] in ("pending", "running", "done")
        deadline = time.time() + 120
        while True:
            st = a.get(f"/api/v1/reports/{rid}").json()
            if st["status"] in ("done", "failed") or time.time() > deadline:
                break
            time.sleep(0.3)
        assert st["status"] == "done", st
        again = c.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-10", "formats": ["pdf"]})
        assert again.status_code == 200 and again.json()["id"] == rid  # reused, not regenerated
        listed = a.get("/api/v1/reports").json()["reports"]
        assert [x["id"] for x in listed] == [rid]
        pdf = a.get(f"/api/v1/reports/{rid}/pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert hashlib.sha256(pdf.content).hexdigest() == st["files"]["pdf"]["sha256"]
        assert "attachment" in pdf.headers["content-disposition"]
        assert a.get(f"/api/v1/reports/{rid}/html").status_code == 404
        assert a.get("/api/v1/reports/999/pdf").status_code == 404
        assert server.http().get(f"/api/v1/reports/{rid}").status_code == 401
        path = server.instance.settings.instance_dir / "reports" / "monthly" / "2026-10" / "vi"
        assert (path / "bao-cao-thang-2026-10-vi.xlsx").is_file()
