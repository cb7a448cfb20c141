"""The IT center's daily tools (#18): enrollment tokens listed and revoked, units and accounts
from the CLI with clear refusals, demo-mode pushes that never wait on Apple, 403 pages that say
which role may."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.test_console_support import client_for, seed
from tests.test_mdm_api_cli import IPAD_MDM, _cli


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_enrollment_tokens_listed_and_revoked_over_the_api(server):
    from ipad_mdm.models import Unit

    with server.session() as s:
        s.add_all([Unit(code="TTTH", name_vi="Trung tâm Tin học"), Unit(code="HC", name_vi="Vụ Hành chính")])
    admin = {"Authorization": f"Bearer {server.api_token('it_admin')}"}
    with server.http() as http:
        made = [http.post("/api/v1/enrollment-tokens", headers=admin, json={"unit": unit}).json()
                for unit in ("TTTH", "HC", None)]
        listed = http.get("/api/v1/enrollment-tokens", headers=admin).json()
        assert listed["total"] == 3 and {t["id"] for t in listed["enrollment_tokens"]} == {m["id"] for m in made}
        text = str(listed)
        for m in made:  # the token and its URL are shown once, at creation, never again
            assert m["token"] not in text and m["url"] not in text
        assert {t["state"] for t in listed["enrollment_tokens"]} == {"usable"}
        # A unit's API token sees and revokes only its unit's enrollment tokens.
        r = http.post("/api/v1/api-tokens", headers=admin, json={"name": "hc", "role": "it_admin", "unit": "HC"})
        unit_token = {"Authorization": f"Bearer {r.json()['token']}"}
        mine = http.get("/api/v1/enrollment-tokens", headers=unit_token).json()
        assert [t["unit"] for t in mine["enrollment_tokens"]] == ["HC"]
        assert http.post(f"/api/v1/enrollment-tokens/{made[0]['id']}/revoke", headers=unit_token).status_code == 404
        # Revoked: the iPad's profile download is refused, and the token leaves the usable list.
        r = http.post(f"/api/v1/enrollment-tokens/{made[0]['id']}/revoke", headers=admin)
        assert r.status_code == 200 and r.json()["state"] == "revoked"
        sim = server.simulator()
        refused = sim.fetch_profile(made[0]["url"])
        assert 400 <= refused.status_code < 500
        assert made[0]["id"] not in {t["id"] for t in http.get("/api/v1/enrollment-tokens", headers=admin)
                                     .json()["enrollment_tokens"]}
        every = http.get("/api/v1/enrollment-tokens?all=1", headers=admin).json()["enrollment_tokens"]
        assert {t["id"]: t["state"] for t in every}[made[0]["id"]] == "revoked"
        # A used token cannot be revoked (the iPad is retired instead); unknown ids are 404.
        sim.enroll(made[2]["url"])
        r = http.post(f"/api/v1/enrollment-tokens/{made[2]['id']}/revoke", headers=admin)
        assert r.status_code == 409 and "retire" in r.json()["error"]
        assert http.post("/api/v1/enrollment-tokens/999999/revoke", headers=admin).status_code == 404
        assert http.post("/api/v1/enrollment-tokens/99999999999999/revoke", headers=admin).status_code == 404
        assert http.get("/api/v1/enrollment-tokens?limit=-1", headers=admin).status_code == 400
        auditor = {"Authorization": f"Bearer {server.api_token('auditor')}"}
        assert http.get("/api/v1/enrollment-tokens", headers=auditor).status_code == 403
        sim.close()


def test_cli_units_and_accounts_refuse_clearly(server):
    assert "unit TTTH added" in _cli(server, "unit", "add", "ttth", "Trung tâm Tin học").stdout
    dup = _cli(server, "unit", "add", "TTTH", "Again", check=False)
    assert dup.returncode == 1 and "exists already" in dup.stderr and "Traceback" not in dup.stderr
    unknown = _cli(server, "enroll-token", "create", "--unit", "NOPE", check=False)
    assert unknown.returncode == 1 and "ipad-mdm unit add NOPE" in unknown.stderr and "TTTH" in unknown.stderr
    # No terminal and no --password-stdin: a clear instruction, not click's bare "Aborted!".
    env = dict(os.environ, IPAD_MDM_INSTANCE=str(server.instance.settings.instance_dir),
               DATABASE_URL=server.instance.settings.database_url)
    proc = subprocess.run([IPAD_MDM, "user", "create", "x-admin", "--role", "it_admin"], input="", env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--password-stdin" in proc.stderr and "Aborted" not in proc.stderr
    proc = subprocess.run([IPAD_MDM, "user", "create", "--username", "x-admin", "--role", "it_admin",
                           "--password-stdin"], input="một-mật-khẩu-dài\n", env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "created x-admin" in proc.stdout
    assert "alembic" not in proc.stderr  # no schema chatter on every call
    tokens = _cli(server, "enroll-token", "list").stdout
    assert "0 token(s)" in tokens


def test_demo_mode_queues_commands_without_waiting_on_apple(server, enrolled):
    """No Apple push certificate and Apple's APNs: the push is not even tried (the log says why,
    once), the command is queued, the device page says so in words, and the iPad gets the command
    when it checks in by itself."""
    inst = server.instance
    inst.settings = inst.settings.with_(apns_url="https://api.push.apple.com")
    assert inst.pushes_off_reason == "demo_push_certificate"
    before = len(server.apns.pushes)
    admin = {"Authorization": f"Bearer {server.api_token('it_admin')}"}
    with server.http() as http:
        r = http.post(f"/api/v1/devices/{enrolled.udid}/commands", headers=admin, json={"request_type": "SecurityInfo"})
        assert r.status_code == 201
        server.wait_pushes()
        detail = http.get(f"/api/v1/devices/{enrolled.udid}", headers=admin).json()
    assert detail["push"]["state"] == "off_demo" and detail["push"]["failures"] == 0
    with server.http() as http:
        pushes = http.get("/api/v1/push-certificate", headers=admin).json()
    assert pushes["state"] == "off_demo" and pushes["demo"] is True  # not "ok": nothing is pushed
    assert len(server.apns.pushes) == before  # nothing went anywhere
    seed(server)
    page = client_for(server, "admin").get(f"/console/devices/{enrolled.udid}").text
    assert "chế độ thử nghiệm" in page and "off_demo" not in page
    handled = enrolled.process_commands()
    assert [c["Command"]["RequestType"] for c in handled] == ["SecurityInfo"]


def test_forbidden_page_names_the_roles_that_may(server):
    seed(server)
    admin = client_for(server, "admin")
    r = admin.get("/console/audit")
    assert r.status_code == 403
    assert "“Quản trị CNTT”" in r.text and "Cán bộ phụ trách an toàn thông tin" in r.text
    assert "Cán bộ kiểm tra, giám sát" in r.text
    admin.post("/console/lang", {"lang": "en", "next": "/console/"})
    r = admin.get("/console/audit")
    assert r.status_code == 403 and "Security officer" in r.text and "Auditor" in r.text


def test_model_names_and_mismatch_rules():
    from ipad_mdm.ipad_models import family_of_text, marketing_name, model_mismatch

    assert marketing_name("iPad13,18") == "iPad (thế hệ thứ 10)"
    assert marketing_name("iPad13,18", "en") == "iPad (10th generation)"
    assert marketing_name("iPad16,5", "en") == "iPad Pro 13-inch (M4)" and marketing_name("iPad99,1") is None
    assert family_of_text("iPad Air 13 inch") == "air" and family_of_text("máy tính bảng") is None
    assert model_mismatch("iPad Pro 11 inch", "iPad13,18") and not model_mismatch("iPad 10", "iPad13,18")
    assert not model_mismatch("iPad Pro 11 inch", "iPad99,1")  # unknown identifier: no false alarm


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_leaders_are_not_added_twice_and_can_be_edited_and_deactivated(server):
    from document_gateway import Leader
    from sqlalchemy import select

    world = seed(server)
    admin = client_for(server, "admin")
    form = {"full_name": "NGUYỄN  VĂN AN", "unit_id": world["units"]["TCCB"], "role": "director", "title": ""}
    dup = admin.post("/console/leaders", form)  # seed() has "Nguyễn Văn An" of TCCB
    assert dup.status_code == 400 and "đã có trong danh sách" in dup.text and "Xác nhận trùng tên" in dup.text
    with server.session() as s:
        assert s.scalar(select(func_count()).select_from(Leader)) == 2
    assert admin.post("/console/leaders", {**form, "confirm_duplicate": "1"}).status_code == 302
    bad = admin.post("/console/leaders", {**form, "role": "king"})
    assert bad.status_code == 400 and "Vui lòng chọn cấp lãnh đạo" in bad.text
    page = admin.get("/console/leaders").text
    assert "Vụ trưởng và tương đương" in page and ">director<" not in page  # ranks in words
    leader_id = world["leader_b"]
    r = admin.post(f"/console/leaders/{leader_id}", {"full_name": "Trần Thị Bình", "title": "Phó Vụ trưởng",
                                                     "unit_id": world["units"]["HC"], "role": "deputy_director"})
    assert r.status_code == 303
    assert admin.post(f"/console/leaders/{leader_id}", {"active": "0"}).status_code == 303
    with server.session() as s:
        leader = s.get(Leader, leader_id)
        assert (leader.title, leader.role, leader.active) == ("Phó Vụ trưởng", "deputy_director", False)
    assert "Đã ngừng kích hoạt" in admin.get("/console/leaders").text
    assert admin.post("/console/leaders/999999", {"active": "1"}).status_code == 404
    assert client_for(server, "auditor").post(f"/console/leaders/{leader_id}", {"active": "1"}).status_code == 403


def func_count():
    from sqlalchemy import func

    return func.count()


def test_enrollment_profile_parts_are_named_in_vietnamese(server):
    """What the iPad's Settings shows for the profile's parts is Vietnamese (#18, item 8)."""
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    names = {p["PayloadType"]: p["PayloadDisplayName"] for p in sim.profile["PayloadContent"]}
    assert names == {"com.apple.security.root": "Chứng thư số gốc của hệ thống quản lý iPad (MDM)",
                     "com.apple.security.scep": "Chứng thư số định danh thiết bị",
                     "com.apple.mdm": "Quản lý thiết bị di động (MDM)"}
    sim.close()


RAW_CODES = re.compile(
    r"\b(acknowledged|active|wireguard|ikev2|monthly|yearly|director|minister|vice_minister|deputy_director|"
    r"non_compliant|compliant|grace|blocked|unknown|queued|sent|notnow|pending|running|done|failed|revoked|"
    r"superseded|supervised|public|internal|confidential|secret|it_admin|security_officer|auditor|leader|"
    r"enrolled|authenticated|retired|checked_out|adopted|off_demo|True|False|None|null|allow|deny|"
    r"cessationOfOperation|privilegeWithdrawn|keyCompromise|unspecified|in_stock|handed_over|lost|"
    r"compliance verdict)\b")
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _visible_text(html: str) -> str:
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts, self.skip = [], 0

        # A policy's JSON view is code on purpose (the advanced view next to the form).
        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style", "title") or (tag == "textarea" and ("id", "policy-body") in attrs)

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style", "title", "textarea") and self.skip > 0

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return " ".join(parser.parts)


def test_no_raw_code_or_utc_timestamp_on_vietnamese_pages(server):
    """Every code a person reads is translated and every time is local and formatted (#18, items
    4 and 8): the console's pages, as each staff role sees them, with an enrolled, adopted iPad."""
    world = seed(server)
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    from console.models import DeviceRecord
    from sqlalchemy import select

    with server.session() as s:
        record_id = s.scalar(select(DeviceRecord.id))
    admin = client_for(server, "admin")
    admin.post(f"/console/handover/{record_id}/set_unit", {"unit_id": world["units"]["TCCB"]})
    admin.post(f"/console/devices/{sim.udid}/commands", {"request_type": "SecurityInfo"})
    from usb_tokens import service as tokens

    # A gateway refusal in the audit log, a superseded identity certificate, a VPN peer cut by compliance.
    with server.http() as anonymous:
        assert anonymous.get("/docs/").status_code in (401, 403)
    from mdm import service as mdm_service
    from mdm.models import Device
    from vpn import cut_peer

    with server.session() as s:
        reenroll = mdm_service.create_reenrollment(s, server.instance.settings, sim.udid, created_by="cli")
    again = server.simulator(udid=sim.udid, serial=sim.serial)
    again.enroll(reenroll["url"])
    server.wait_pushes()
    again.process_commands()
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        cut_peer(s, server.instance, device, "compliance verdict non_compliant", by="compliance")
    with server.session() as s:
        token = tokens.register(s, serial_number="TK-CRAWL", kind="Token", by="cli")
        tokens.report_lost(s, token, by="cli", circumstances="Thử nghiệm")
        token_id = token.id
    # A VPN migration with an iPad that could not move, a gateway, a provider (#19).
    from vpn import VpnCampaignDevice, campaigns as vpn_campaigns, gateways as vpn_gateways, providers as vpn_providers

    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        vpn_providers.define(s, server.instance, {
            "key": "vpn-cy", "name": "VPN Ban Cơ yếu", "kind": "vpn_app", "vpn_subtype": "vn.gov.bcy.vpn",
            "vendor_config": {"Server": "vpn.bcy.gov.vn"}, "auth": "device_certificate"}, by="cli")
        campaign = vpn_campaigns.create(s, {"name": "WireGuard → VPN Ban Cơ yếu", "source": "wireguard",
                                            "target": "vpn-cy"}, by="cli")
        s.add(VpnCampaignDevice(campaign_id=campaign.id, device_id=device.id, step="failed",
                                reason="install_failed: MCProfileErrorDomain 1006"))
        vpn_gateways.add(s, server.instance, "gw1")
    # An ABM server token near expiry with a failed sync and a synced iPad (#21).
    import datetime as dt

    from ade import AdeDevice, AdeToken

    with server.session() as s:
        row = AdeToken(consumer_key="CK_crawl", credentials_enc=server.instance.fernet().encrypt(b"{}").decode(),
                       access_token_expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10),
                       server_name="MDM Văn phòng Chính phủ", org_name="Văn phòng Chính phủ",
                       last_error="T_C_NOT_SIGNED (403)", last_sync_at=dt.datetime.now(dt.timezone.utc))
        s.add(row)
        s.flush()
        s.add(AdeDevice(token_id=row.id, serial_number="F9FDN4ZKQ1GC", model="iPad Pro 11-inch (M4)",
                        profile_status="assigned"))
    pages = ["/console/ade", "/console/vpn", "/console/", "/console/devices", f"/console/devices/{sim.udid}", "/console/handover",
             f"/console/handover/{record_id}", "/console/leaders", "/console/units", "/console/policies",
             "/console/reports", "/console/audit", "/console/documents", "/console/security-events",
             "/console/apps", "/console/declarations", "/console/enrollment-tokens?all=1", "/console/usb-tokens",
             "/console/policies/new", f"/console/usb-tokens/{token_id}"]
    seen = 0
    for user in ("admin", "security", "auditor"):
        client = client_for(server, user)
        for path in pages:
            r = client.get(path)
            # Every staff role reads the VPN page (a broken page must not be passed over as "not allowed").
            assert path not in ("/console/vpn", "/console/ade") or r.status_code == 200, (user, path, r.status_code)
            if r.status_code != 200:
                continue
            seen += 1
            text = _visible_text(r.text)
            assert not RAW_CODES.findall(text), (user, path, sorted(set(RAW_CODES.findall(text))))
            assert not ISO_TIME.findall(text), (user, path, ISO_TIME.findall(text)[:3])
            if path == f"/console/devices/{sim.udid}":
                assert "Đã được cấp chứng thư mới thay thế" in text and "Không đáp ứng chính sách tuân thủ" in text
            if path == "/console/audit":
                assert "Từ chối" in text and "Xem danh sách tài liệu" in text
            if path == "/console/ade":
                assert "Còn 9 ngày" in text and "Lần đồng bộ gần nhất không thành công" in text
                assert "Đã gán hồ sơ" in text and ("Tải lên" in text) == (user == "admin")
            if path == "/console/vpn":
                assert "iPad từ chối cài hồ sơ VPN mới" in text and "Ứng dụng VPN chuyên dụng" in text
                assert ("Quay lại VPN cũ" in text) == (user != "auditor")  # auditors read, never act
        client.close()
    assert seen >= 30
    again.close()
    sim.close()


def test_console_refusals_are_in_vietnamese_and_enrollment_tokens_are_managed(server, enrolled):
    """#18, items 7-8: refusals from the command, report and gateway layers reach people in their language;
    enrollment tokens are listed and cancelled from the console."""
    from document_gateway import service as gw
    from mdm import service as mdm_service

    world = seed(server)
    with server.session() as s:
        usable = mdm_service.create_enrollment(s, server.instance.settings, unit_code="TCCB", created_by="cli")["id"]
    admin, sec, auditor = client_for(server, "admin"), client_for(server, "security"), client_for(server, "auditor")
    page = admin.get("/console/enrollment-tokens").text
    assert f'id="token-{usable}"' in page and "Chưa dùng" in page and "Dòng lệnh (CLI)" in page
    assert ">usable<" not in page and ">cli<" not in page
    assert auditor.post(f"/console/enrollment-tokens/{usable}/revoke").status_code == 403
    assert admin.post(f"/console/enrollment-tokens/{usable}/revoke").status_code == 303
    with server.session() as s:
        assert all(t["id"] != usable for t in mdm_service.list_enrollment_tokens(s)[1])
    assert "Đã huỷ" in admin.get("/console/enrollment-tokens?all=1").text
    assert admin.post("/console/enrollment-tokens/99999999/revoke").status_code == 404

    # A command with a bad PIN: the reason in Vietnamese, nothing queued.
    r = admin.post(f"/console/devices/{enrolled.udid}/commands",
                   {"request_type": "DeviceLock", "confirm": "1", "confirm_serial": enrolled.serial, "PIN": "12"},
                   follow_redirects=True)
    assert "Mã PIN phải gồm đúng 6 chữ số." in r.text and "must be six digits" not in r.text
    # A report period that is not one.
    r = sec.post("/console/reports/generate", {"kind": "monthly", "period": "tháng mười"}, follow_redirects=True)
    assert "Kỳ báo cáo không hợp lệ" in r.text and "period:" not in r.text
    # The gateway's refusal inside a handover step: an inactive leader.
    with server.session() as s:
        from document_gateway import Leader

        gw.update_leader(s, s.get(Leader, world["leader_b"]), active=False)
    from tests.test_console_support import enroll_recorded

    sim, record_id = enroll_recorded(server, admin, world["units"]["HC"])
    r = admin.post(f"/console/handover/{record_id}/assign", {"leader_id": world["leader_b"]})
    assert r.status_code == 409 and "Lãnh đạo này đã ngừng sử dụng hệ thống." in r.text and "not active" not in r.text
    sim.close()
    for c in (admin, sec, auditor):
        c.close()
