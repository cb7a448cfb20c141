"""The office's document app over HTTPS: an in-house release goes to the pilot units, is accepted,
goes to every unit; the next one stays in the pilot until accepted; pause and roll back; Apple's
install errors; bad uploads refused with nothing stored."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from apps.models import AppRelease
from ipad_mdm.models import Unit
from tests import apple_schema
from tests.ipa_builder import build_ipa, provisioning_profile
from tests.test_gateway import api

BUNDLE = "vn.gov.vpcp.vanban"
CONFIG = {"ServerURL": "${gateway_url}", "DeviceID": "${udid}", "Unit": "${unit_name}", "Nested": ["${serial}"]}


def units(server):
    with server.session() as s:
        s.add_all([Unit(code="TTTH", name_vi="Trung tâm Tin học", stage="pilot"),
                   Unit(code="VHC", name_vi="Vụ Hành chính", stage="general")])


def ipad(server, unit):
    sim = server.simulator()
    sim.enroll(server.enrollment_url(unit_code=unit))
    server.wait_pushes()
    sim.process_commands()
    return sim


def upload(admin, data: bytes, bundle=BUNDLE):
    return admin.post(f"/api/v1/apps/{bundle}/releases", content=data,
                      headers={"Content-Type": "application/octet-stream"})


def installed(sim, bundle=BUNDLE):
    return next((a["ShortVersion"] for a in sim.state.apps if a["Identifier"] == bundle), None)


def sync(server, *sims):
    server.wait_pushes()
    for sim in sims:
        sim.process_commands()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_pilot_acceptance_rollout_and_rollback(server):
    units(server)
    admin, officer = api(server, "it_admin"), api(server, "security_officer")
    r = admin.post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản điều hành", "kind": "inhouse",
                                         "configuration": CONFIG})
    assert r.status_code == 201, r.text
    pilot, general = ipad(server, "TTTH"), ipad(server, "VHC")

    r = upload(admin, build_ipa(version="1.0", build="100"))
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "pilot" and r.json()["team_id"] == "VPCP123456" and r.json()["devices_queued"] == 1
    sync(server, pilot, general)
    assert installed(pilot) == "1.0" and installed(general) is None
    # A declarative iPad gets it by app.managed (validated against Apple's schema), not InstallApplication.
    decl = pilot.ddm.declarations["vn.gov.ipadmdm.app." + BUNDLE]
    assert decl["Payload"]["BundleID"] == BUNDLE and decl["Payload"]["ManifestURL"].startswith(server.url)
    if apple_schema.schema_root() is not None:
        assert apple_schema.declaration_problems({k: v for k, v in decl.items() if not k.startswith("_")}) == []
    assert not any(c["Command"]["RequestType"] == "InstallApplication" for c in pilot.handled)
    # The managed configuration was rendered for this iPad.
    conf = pilot.state.app_configurations[BUNDLE]
    assert conf["DeviceID"] == pilot.udid and conf["ServerURL"].endswith("/docs/") and conf["Unit"] == "Trung tâm Tin học"
    assert conf["Nested"] == [pilot.serial]

    # Only an officer records the acceptance, with the minute.
    minute = {"minute": ("bien-ban-nghiem-thu.pdf", b"%PDF-1.4 bien ban", "application/pdf")}
    assert admin.post(f"/api/v1/apps/{BUNDLE}/releases/1.0/accept", files=minute).status_code == 403
    assert officer.post(f"/api/v1/apps/{BUNDLE}/releases/1.0/accept", data={"notes": "x"}).status_code == 400
    r = officer.post(f"/api/v1/apps/{BUNDLE}/releases/1.0/accept", files=minute,
                     data={"notes": "Nghiệm thu tích hợp ngày 01/12/2026"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "accepted" and r.json()["accepted_by"].startswith("token:")
    sync(server, pilot, general)
    assert installed(general) == "1.0"
    prog = admin.get(f"/api/v1/apps/{BUNDLE}/progress").json()
    assert prog["units"]["TTTH"]["installed"] == 1 and prog["units"]["VHC"]["installed"] == 1

    # 1.1 stays in the pilot until accepted.
    r = upload(admin, build_ipa(version="1.1", build="110"))
    assert r.status_code == 201 and r.json()["devices_queued"] == 1, r.text
    sync(server, pilot, general)
    assert installed(pilot) == "1.1" and installed(general) == "1.0"
    assert admin.get(f"/api/v1/apps/{BUNDLE}").json()["accepted_version"] == "1.0"

    # Paused: an iPad enrolling in the pilot now gets the accepted 1.0, not the paused 1.1.
    assert admin.post(f"/api/v1/apps/{BUNDLE}/releases/1.1/pause").json()["paused"] is True
    late = ipad(server, "TTTH")
    assert installed(late) == "1.0"
    # Rolled back: the pilot returns to the previous accepted release.
    r = admin.post(f"/api/v1/apps/{BUNDLE}/releases/1.1/withdraw")
    assert r.status_code == 200 and r.json()["rolled_back_to"] == "1.0"
    sync(server, pilot)
    assert installed(pilot) == "1.0"
    for c in (admin, officer):
        c.close()
    for sim in (pilot, general, late):
        sim.close()


def test_apple_install_error_is_shown_per_device(server):
    """An older iPad (MDM path: InstallApplication) and a declarative one (app.managed) both fail."""
    units(server)
    admin = api(server, "it_admin")
    assert admin.post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản", "kind": "inhouse"}).status_code == 201
    old = server.simulator()
    old.state.os_version, old.ddm.supported = "16.7.10", False
    new = server.simulator()
    for sim in (old, new):
        sim.state.install_errors[BUNDLE] = (12005, "MCInstallationErrorDomain", "The app could not be installed")
        sim.enroll(server.enrollment_url(unit_code="TTTH"))
        server.wait_pushes()
        sim.process_commands()
    assert upload(admin, build_ipa()).status_code == 201
    sync(server, old, new)
    assert any(c["Command"]["RequestType"] == "InstallApplication" for c in old.handled)
    assert not any(c["Command"]["RequestType"] == "InstallApplication" for c in new.handled)
    devices = {d["udid"]: d for d in admin.get(f"/api/v1/apps/{BUNDLE}/progress").json()["devices"]}
    assert devices[old.udid]["status"] == "failed" and "MCInstallationErrorDomain 12005" in devices[old.udid]["error"]
    assert devices[new.udid]["status"] == "failed" and "Error.InstallFailed" in devices[new.udid]["error"]
    for sim in (old, new):
        sim.close()


def test_bad_uploads_are_refused_and_nothing_is_stored(server, monkeypatch):
    admin = api(server, "it_admin")
    assert admin.post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản", "kind": "inhouse"}).status_code == 201
    assert upload(admin, build_ipa(version="2.0")).status_code == 201
    profile = bytearray(provisioning_profile())
    at = profile.find(b"VPCP123456")
    profile[at] ^= 0x01  # one changed byte inside the signed content
    cases = [
        (b"not a zip file at all", 400, "not_zip"),
        (build_ipa(with_info=False), 400, "no_info_plist"),
        (build_ipa(version="2.1", profile=bytes(profile)), 400, "bad_profile"),
        (build_ipa(bundle_id="vn.gov.other", version="3.0"), 409, "bundle_mismatch"),
        (build_ipa(version="1.9"), 409, "not_newer"),
        (build_ipa(version="2.0"), 409, "version_exists"),
        (b"", 400, None),
    ]
    for data, status, code in cases:
        r = upload(admin, data)
        assert r.status_code == status, (code, r.text)
        if code:
            assert r.json()["code"] == code
    monkeypatch.setenv("IPAD_MDM_APP_MAX_BYTES", "10000")
    assert upload(admin, build_ipa(version="9.0", padding=50_000)).status_code == 413
    assert admin.post("/api/v1/apps/no.such.app/releases", content=build_ipa(),
                      headers={"Content-Type": "application/octet-stream"}).status_code == 404
    with server.session() as s:
        assert s.scalar(select(func.count()).select_from(AppRelease)) == 1
    stored = sorted(p.name for p in (server.instance.settings.instance_dir / "apps").rglob("*") if p.is_file())
    assert len(stored) == 1 and stored[0].endswith(".ipa")  # nothing of the refused uploads is left
    for body, field in (({"bundle_id": "vn.x", "name": "X", "kind": "store", "app_store_id": "12ab"}, "app_store_id"),
                        ({"bundle_id": "vn.y", "name": "Y", "kind": "inhouse", "configuration": [1]}, "configuration"),
                        ({"bundle_id": "bad id!", "name": "Z", "kind": "inhouse"}, "bundle_id")):
        r = admin.post("/api/v1/apps", json=body)
        assert r.status_code == 400 and field in r.json()["error"], r.text
    # Files are served only at the release's own URL.
    release = server.http().get("/apps/1/0000/manifest.plist")
    assert release.status_code == 404


def test_ipad_left_behind_the_accepted_version_loses_the_gateway_after_grace(server, tmp_path, monkeypatch):
    import datetime as dt

    from compliance import clock
    from tests.conftest import retire_baseline_policy
    from tests.test_gateway import ipad_client, upload as upload_document, verdict_state

    units(server)
    admin, officer = api(server, "it_admin"), api(server, "security_officer")
    retire_baseline_policy(officer)
    r = officer.post("/api/v1/policies", json={"name": "Ứng dụng văn bản", "grace_hours": 24, "assign": {"all": True},
                                                 "rules": [{"kind": "app_min_version", "bundle_ids": [BUNDLE]}],
                                                 "actions": ["block_gateway"]})
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản", "kind": "inhouse"}).status_code == 201
    pilot, general = ipad(server, "TTTH"), ipad(server, "VHC")
    minute = {"minute": ("bien-ban.pdf", b"%PDF-1.4", "application/pdf")}
    assert upload(admin, build_ipa(version="1.0")).status_code == 201
    assert officer.post(f"/api/v1/apps/{BUNDLE}/releases/1.0/accept", files=minute).status_code == 200
    sync(server, pilot, general)
    assert verdict_state(server, general) == "compliant"
    r = admin.post("/api/v1/leaders", json={"full_name": "Trần Thị Bình", "title": "Vụ trưởng", "unit": "VHC",
                                            "role": "director"})
    assert admin.put(f"/api/v1/devices/{general.udid}/assignment", json={"leader_id": r.json()["id"]}).status_code == 200
    doc = upload_document(officer, "bao-cao.txt", "Báo cáo.\n".encode() * 20, unit="VHC").json()
    reader = ipad_client(server, tmp_path, general)
    assert reader.get(f"/docs/{doc['id']}").status_code == 200

    # 1.1 accepted; this iPad cannot install it (left on 1.0).
    general.state.install_errors[BUNDLE] = (12004, "MCInstallationErrorDomain", "Not enough storage")
    assert upload(admin, build_ipa(version="1.1")).status_code == 201
    sync(server, pilot)
    assert officer.post(f"/api/v1/apps/{BUNDLE}/releases/1.1/accept", files=minute).status_code == 200
    sync(server, pilot, general)
    admin.post(f"/api/v1/devices/{general.udid}/commands", json={"request_type": "InstalledApplicationList"})
    sync(server, general)
    assert installed(general) == "1.0" and verdict_state(server, general) == "grace"
    assert reader.get(f"/docs/{doc['id']}").status_code == 200  # within the grace period
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=25)
    monkeypatch.setattr(clock, "now", lambda: later)
    from compliance import engine

    engine.evaluate_all(server.instance.database, server.hooks, later)
    assert verdict_state(server, general) == "non_compliant"
    assert reader.get(f"/docs/{doc['id']}").status_code == 403
    assert verdict_state(server, pilot) == "compliant"
    reader.close()
    for sim in (pilot, general):
        sim.close()


def test_provisioning_profile_expiry_is_warned_30_14_7_days_ahead(server, notifier):
    import datetime as dt

    from apps.jobs import warn_expiring_profiles
    from tests.ipa_builder import provisioning_profile

    admin, officer = api(server, "it_admin"), api(server, "security_officer")
    assert admin.post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản", "kind": "inhouse"}).status_code == 201
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=20)).replace(microsecond=0, tzinfo=None)
    r = upload(admin, build_ipa(profile=provisioning_profile(expires=expires)))
    assert r.status_code == 201 and r.json()["profile_expires_at"].startswith(expires.date().isoformat()), r.text
    now = dt.datetime.now(dt.timezone.utc)
    with server.session() as s:
        assert warn_expiring_profiles(s, now) == [f"{BUNDLE}:1.0:30"]
        assert warn_expiring_profiles(s, now) == []  # one warning per threshold, not one per run
        assert warn_expiring_profiles(s, now + dt.timedelta(days=8)) == [f"{BUNDLE}:1.0:14"]
        assert warn_expiring_profiles(s, now + dt.timedelta(days=14)) == [f"{BUNDLE}:1.0:7"]
        assert warn_expiring_profiles(s, now + dt.timedelta(days=21)) == [f"{BUNDLE}:1.0:0"]
    events = officer.get("/api/v1/security-events").json()["events"]
    texts = [e["summary_vi"] for e in events if e["kind"] == "app_profile_expiring"]
    assert len(texts) == 4 and any("còn 20 ngày" in t or "còn 21 ngày" in t for t in texts)
    assert any("đã hết hạn" in t for t in texts)
    notifier.wait_for(1)


def test_monthly_report_shows_app_coverage(server, tmp_path):
    import datetime as dt
    from zoneinfo import ZoneInfo

    from tests.test_mdm_api_cli import _cli

    units(server)
    admin, officer = api(server, "it_admin"), api(server, "security_officer")
    assert admin.post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản", "kind": "inhouse"}).status_code == 201
    pilot, general, behind = ipad(server, "TTTH"), ipad(server, "VHC"), ipad(server, "VHC")
    behind.state.install_errors[BUNDLE] = (12004, "MCInstallationErrorDomain", "Not enough storage")
    assert upload(admin, build_ipa(version="1.0")).status_code == 201
    sync(server, pilot)
    minute = {"minute": ("bien-ban.pdf", b"%PDF-1.4", "application/pdf")}
    assert officer.post(f"/api/v1/apps/{BUNDLE}/releases/1.0/accept", files=minute).status_code == 200
    sync(server, general, behind)
    month = dt.datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%Y-%m")
    out = tmp_path / "r"
    _cli(server, "report", "monthly", "--month", month, "--format", "html", "--output", str(out), "--quiet")
    html = next(out.glob("*.html")).read_text(encoding="utf-8")
    section = html[html.index("Ứng dụng của cơ quan: mức độ triển khai phiên bản đã nghiệm thu"):]
    assert "Văn bản (vn.gov.vpcp.vanban): phiên bản đã nghiệm thu 1.0" in section
    assert "có trên 2/3 thiết bị" in section and "chưa đạt 95 % số thiết bị; 1 thiết bị chưa cập nhật." in section
    assert "Vụ Hành chính" in section
    for sim in (pilot, general, behind):
        sim.close()


def test_remove_application_and_managed_list_through_the_command_api(server):
    units(server)
    admin = api(server, "it_admin")
    assert admin.post("/api/v1/apps", json={"bundle_id": "vn.gov.vpcp.lich", "name": "Lịch công tác", "kind": "store",
                                            "app_store_id": "987654321"}).status_code == 201
    sim = server.simulator()
    sim.state.os_version, sim.ddm.supported = "16.7.10", False  # the MDM-command path
    sim.state.store_apps[987654321] = "vn.gov.vpcp.lich"
    sim.enroll(server.enrollment_url(unit_code="TTTH"))
    sync(server, sim)
    r = admin.post("/api/v1/apps/vn.gov.vpcp.lich/releases", json={"version": "1.0"})
    assert r.status_code == 201, r.text
    sync(server, sim)
    sent = [c["Command"] for c in sim.handled if c["Command"]["RequestType"] == "InstallApplication"]
    assert sent[-1]["iTunesStoreID"] == 987654321 and "ManifestURL" not in sent[-1]
    assert installed(sim, "vn.gov.vpcp.lich") == "1.0"
    r = admin.post(f"/api/v1/devices/{sim.udid}/commands",
                   json={"request_type": "ManagedApplicationList", "params": {"Identifiers": ["vn.gov.vpcp.lich"]}})
    assert r.status_code == 201, r.text
    sync(server, sim)
    r = admin.get(f"/api/v1/commands/{r.json()['command_uuid']}")
    assert r.json()["result"]["ManagedApplicationList"]["vn.gov.vpcp.lich"]["Status"] == "Managed"
    r = admin.post(f"/api/v1/devices/{sim.udid}/commands",
                   json={"request_type": "RemoveApplication", "params": {"Identifier": "vn.gov.vpcp.lich"}})
    assert r.status_code == 201, r.text
    sync(server, sim)
    assert installed(sim, "vn.gov.vpcp.lich") is None
    assert admin.post(f"/api/v1/devices/{sim.udid}/commands",
                      json={"request_type": "RemoveApplication", "params": {}}).status_code == 400
    sim.close()


def test_rollout_to_many_ipads_runs_in_the_background(server, monkeypatch):
    from apps import delivery

    units(server)
    admin = api(server, "it_admin")
    assert admin.post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản", "kind": "inhouse"}).status_code == 201
    sims = [ipad(server, "TTTH"), ipad(server, "TTTH")]
    monkeypatch.setattr(delivery, "INLINE_LIMIT", 1)
    r = upload(admin, build_ipa(version="1.0"))
    assert r.status_code == 201 and r.json()["rollout"] == "queued" and r.json()["devices"] == 2, r.text
    sync(server, *sims)
    assert [installed(s) for s in sims] == ["1.0", "1.0"]
    for s in sims:
        s.close()
