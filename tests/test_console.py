"""Console over real HTTPS (the live `server`): sign-in, CSRF, lockout, TOTP, roles, handover, PDF."""
from __future__ import annotations

import datetime as dt
import re
import subprocess

import pyotp
import pytest
from sqlalchemy import select

from tests.test_console_support import (
    PASSWORD,
    ConsoleClient,
    client_for,
    enroll_recorded,
    seed,
)


# Production runs on PostgreSQL: every test here runs on both backends.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def world(server):
    return seed(server)


# ------------------------------------------------------------------ sign-in, CSRF, cookies
def test_login_requires_csrf_and_sets_secure_cookie(server, world):
    c = ConsoleClient(server)
    page = c.get("/console/login")
    assert page.status_code == 200 and "Đăng nhập" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # No token: refused before the password is even looked at.
    resp = c.post("/console/login", {"username": "admin", "password": PASSWORD}, csrf=False)
    assert resp.status_code == 400 and "CSRF" in resp.text
    # A wrong token is refused as well.
    resp = c.post("/console/login", {"username": "admin", "password": PASSWORD, "csrf_token": "x" * 43})
    assert resp.status_code == 400
    resp = c.login("admin")
    assert resp.status_code == 302 and resp.headers["location"].endswith("/console/")
    cookie = resp.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert c.get("/console/").status_code == 200
    c.close()


def test_unauthenticated_pages_redirect_to_login(server, world):
    c = ConsoleClient(server)
    resp = c.get("/console/devices")
    assert resp.status_code == 302 and "/console/login" in resp.headers["location"]
    c.close()


def test_lockout_after_five_failures(server, world):
    from console.models import User

    c = ConsoleClient(server)
    for _ in range(4):
        resp = c.login("auditor", "wrong password!!")
        assert resp.status_code == 401 and "Sai tên đăng nhập hoặc mật khẩu" in resp.text
    resp = c.login("auditor", "wrong password!!")
    assert resp.status_code == 429 and "tạm khoá" in resp.text
    # Locked: even the right password is refused for 15 minutes.
    resp = c.login("auditor")
    assert resp.status_code == 429
    with server.session() as s:
        user = s.scalar(select(User).where(User.username == "auditor"))
        assert user.locked_until > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=14)
        user.locked_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # the 15 minutes pass
    assert c.login("auditor").status_code == 302
    c.close()


def test_unknown_user_and_wrong_password_look_the_same(server, world):
    import re

    c = ConsoleClient(server)
    a = c.login("nobody", "whatever-password")
    b = c.login("admin", "whatever-password")
    assert a.status_code == b.status_code == 401
    strip = lambda r: (re.sub(r'name="csrf_token" value="[^"]+"', "", r.text),  # noqa: E731
                       {k: v for k, v in r.headers.items() if k not in ("set-cookie", "date", "content-length")})
    assert strip(a) == strip(b)
    c.close()


def test_totp_enrollment_and_verification(server, world):
    import re

    c = client_for(server, "security")
    page = c.get("/console/account/totp")
    assert page.status_code == 200 and "<svg" in page.text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)
    assert c.post("/console/account/totp", {"action": "enable", "code": "000000"}).status_code == 400
    resp = c.post("/console/account/totp", {"action": "enable", "code": pyotp.TOTP(secret).now()})
    assert resp.status_code == 302
    # The secret is stored encrypted (Fernet), not in clear.
    from console.models import User

    with server.session() as s:
        user = s.scalar(select(User).where(User.username == "security"))
        assert user.totp_enabled and secret.encode() not in user.totp_secret_enc
        assert server.instance.fernet().decrypt(user.totp_secret_enc).decode() == secret
    c.post("/console/logout")
    c2 = ConsoleClient(server)
    resp = c2.login("security")
    assert resp.status_code == 302 and resp.headers["location"].endswith("/console/login/totp")
    # Password alone gives no access.
    assert c2.get("/console/policies").status_code == 302
    assert c2.post("/console/login/totp", {"code": "123456"}).status_code == 401
    totp = pyotp.TOTP(secret)
    # Use the next step's code, so the one used to enable TOTP (same step) is not a replay.
    code = totp.at(dt.datetime.now() + dt.timedelta(seconds=30))
    resp = c2.post("/console/login/totp", {"code": code})
    assert resp.status_code == 302, resp.text
    assert c2.get("/console/policies").status_code == 200
    # The same code cannot be used twice.
    c3 = ConsoleClient(server)
    c3.login("security")
    assert c3.post("/console/login/totp", {"code": code}).status_code == 401
    for x in (c, c2, c3):
        x.close()


def test_logout_ends_the_session_even_for_a_copied_cookie(server, world):
    c = client_for(server, "admin")
    stolen = dict(c.http.cookies)
    assert c.get("/console/devices").status_code == 200
    c.post("/console/logout")
    thief = server.http(follow_redirects=False, cookies=stolen)
    resp = thief.get("/console/devices")
    assert resp.status_code == 302 and "/console/login" in resp.headers["location"]
    thief.close()
    c.close()


def test_language_switch(server, world):
    c = client_for(server, "admin")
    assert "Thiết bị" in c.get("/console/devices").text
    c.post("/console/lang", {"lang": "en", "next": "/console/devices"})
    page = c.get("/console/devices")
    assert "Devices" in page.text and "Danh sách thiết bị" not in page.text
    c.close()


def test_create_user_cli(server, world, tmp_path):
    from click.testing import CliRunner

    from console.cli import user
    from console.models import User

    # The click group opens the same instance the live server uses.
    from ipad_mdm.cli import main as main_cli

    main_cli.add_command(user, "user")
    try:
        result = CliRunner().invoke(
            main_cli, ["--instance", str(server.instance.settings.instance_dir), "user", "create", "tthsec",
                       "--role", "security_officer", "--full-name", "Đỗ Bảo Mật", "--password-stdin", "--json"],
            input="một-mật-khẩu-đủ-dài\n", env={"DATABASE_URL": server.instance.database.url})
    finally:
        main_cli.commands.pop("user", None)
    assert result.exit_code == 0, result.output
    with server.session() as s:
        assert s.scalar(select(User).where(User.username == "tthsec")).role == "security_officer"


# ------------------------------------------------------------------ role matrix
PAGES = ["/console/", "/console/devices", "/console/handover", "/console/handover/new", "/console/units",
         "/console/leaders", "/console/policies", "/console/policies/new", "/console/documents", "/console/audit",
         "/console/reports", "/console/me"]
EXPECTED = {
    # page: (it_admin, security_officer, auditor, leader)
    "/console/": (200, 200, 200, 302),
    "/console/devices": (200, 200, 200, 403),
    "/console/handover": (200, 200, 200, 403),
    "/console/handover/new": (200, 403, 403, 403),
    "/console/units": (200, 200, 200, 403),
    "/console/leaders": (200, 200, 200, 403),
    "/console/policies": (200, 200, 200, 403),
    "/console/policies/new": (403, 200, 403, 403),
    "/console/documents": (200, 200, 200, 403),
    "/console/audit": (403, 200, 200, 403),
    "/console/reports": (200, 200, 200, 403),
    "/console/me": (403, 403, 403, 200),
}


def test_role_matrix_pages(server, world):
    for i, username in enumerate(("admin", "security", "auditor", "leader")):
        c = client_for(server, username)
        for page in PAGES:
            assert c.get(page).status_code == EXPECTED[page][i], (username, page)
        c.close()


def test_role_matrix_actions(server, world):
    units = world["units"]
    # Units: only the IT Center's administrators create them.
    for username, status in (("security", 403), ("auditor", 403), ("leader", 403), ("admin", 302)):
        c = client_for(server, username)
        resp = c.post("/console/units", {"action": "create", "code": "VPCP-TH", "name_vi": "Vụ Tổng hợp",
                                         "name_en": "General Affairs Department", "stage": "general"})
        assert resp.status_code == status, username
        c.close()
    # Handover registration: it_admin only.
    for username in ("security", "auditor", "leader"):
        c = client_for(server, username)
        resp = c.post("/console/handover/new", {"serial_number": "DMPAB12CD34", "model": "iPad", "unit_id": units["TCCB"]})
        assert resp.status_code == 403, username
        c.close()
    # Policies: security officer writes, auditor reads only.
    c = client_for(server, "auditor")
    assert c.post("/console/policies/new", {"body": "{}"}).status_code == 403
    c.close()


def test_units_page_pilot_first(server, world):
    c = client_for(server, "admin")
    c.post("/console/units", {"action": "create", "code": "VPCP-PL", "name_vi": "Vụ Pháp luật",
                              "name_en": "Legal Affairs Department", "stage": "general"})
    page = c.get("/console/units").text
    page = page[page.index("<table"):]  # past the flash message naming the new unit
    assert page.index("Vụ Tổ chức cán bộ") < page.index("Vụ Pháp luật")
    assert page.index("Trung tâm Tin học") < page.index("Vụ Pháp luật")
    # Duplicate code is refused with a message.
    resp = c.post("/console/units", {"action": "create", "code": "TTTH", "name_vi": "X", "stage": "general"})
    assert resp.status_code == 400 and "đã tồn tại" in resp.text
    c.close()


# ------------------------------------------------------------------ devices, leaders, commands
def _hand_to(server, admin, record_id, leader_id):
    assert admin.post(f"/console/handover/{record_id}/assign", {"leader_id": leader_id}).status_code == 303


def test_leader_sees_only_own_device(server, world):
    admin = client_for(server, "admin")
    sim_a, rec_a = enroll_recorded(server, admin, world["units"]["TCCB"])
    sim_b, rec_b = enroll_recorded(server, admin, world["units"]["HC"])
    _hand_to(server, admin, rec_a, world["leader_a"])
    _hand_to(server, admin, rec_b, world["leader_b"])
    leader = client_for(server, "leader")
    me = leader.get("/console/me")
    assert me.status_code == 200 and sim_a.serial in me.text and sim_b.serial not in me.text
    assert leader.get(f"/console/devices/{sim_a.udid}").status_code == 200
    assert leader.get(f"/console/devices/{sim_b.udid}").status_code == 404
    assert leader.get("/console/devices").status_code == 403
    assert leader.get(f"/console/handover/{rec_a}").status_code == 403
    assert leader.post(f"/console/devices/{sim_a.udid}/commands", {"request_type": "DeviceLock"}).status_code == 403
    # The device list filters: by unit, by handover state, by serial.
    page = admin.get("/console/devices", params={"unit": world["units"]["HC"]}).text
    assert sim_b.serial in page and sim_a.serial not in page
    page = admin.get("/console/devices", params={"q": sim_a.serial[-5:].lower()}).text
    assert sim_a.serial in page and sim_b.serial not in page
    page = admin.get("/console/devices", params={"state": "assigned"}).text
    assert sim_a.serial in page and sim_b.serial in page
    page = admin.get("/console/devices", params={"state": "in_service"}).text
    assert sim_a.serial not in page
    for x in (admin, leader, sim_a, sim_b):
        x.close()


def test_commands_roles_and_confirmation(server, world):
    from mdm.models import Command

    admin = client_for(server, "admin")
    sim, _ = enroll_recorded(server, admin, world["units"]["TTTH"])
    page = admin.get(f"/console/devices/{sim.udid}")
    assert page.status_code == 200 and sim.udid in page.text
    auditor = client_for(server, "auditor")
    assert auditor.get(f"/console/devices/{sim.udid}").status_code == 200
    for rt in ("DeviceInformation", "DeviceLock", "EraseDevice"):
        assert auditor.post(f"/console/devices/{sim.udid}/commands", {"request_type": rt}).status_code == 403
    sec = client_for(server, "security")
    # Lost Mode: first the confirmation page, then the typed serial.
    step1 = sec.post(f"/console/devices/{sim.udid}/commands", {"request_type": "EnableLostMode", "Message": "Thiết bị bị mất, xin gọi 024 0000 0000"})
    assert step1.status_code == 200 and "confirm_serial" in step1.text
    wrong = sec.post(f"/console/devices/{sim.udid}/commands", {"request_type": "EnableLostMode", "confirm": "1",
                                                             "Message": "Mất máy", "confirm_serial": "WRONG123"})
    assert wrong.status_code == 400 and "không khớp" in wrong.text
    with server.session() as s:
        assert s.scalar(select(Command).where(Command.request_type == "EnableLostMode")) is None
    ok = sec.post(f"/console/devices/{sim.udid}/commands", {"request_type": "EnableLostMode", "confirm": "1",
                                                          "Message": "Mất máy", "confirm_serial": sim.serial.lower()})
    assert ok.status_code == 302
    # Security officers do not wipe (that is the IT Center's retirement) nor restart.
    assert sec.post(f"/console/devices/{sim.udid}/commands", {"request_type": "EraseDevice"}).status_code == 403
    assert sec.post(f"/console/devices/{sim.udid}/commands", {"request_type": "RestartDevice"}).status_code == 403
    # A plain inventory refresh needs no confirmation.
    assert sec.post(f"/console/devices/{sim.udid}/commands", {"request_type": "SecurityInfo"}).status_code == 302
    server.wait_pushes()
    handled = [c["Command"]["RequestType"] for c in sim.process_commands()]
    assert "EnableLostMode" in handled and "SecurityInfo" in handled
    page = admin.get(f"/console/devices/{sim.udid}").text
    # Command names and statuses in words; the codes stay only in attributes.
    assert "Bật chế độ mất" in page and ">Đã thực hiện<" in page and ">acknowledged<" not in page
    assert ">EnableLostMode<" not in page
    for x in (admin, auditor, sec, sim):
        x.close()


# ------------------------------------------------------------------ the handover workflow
def _pdf_png_not_blank(pdf: bytes, tmp_path) -> None:
    from PIL import Image

    (tmp_path / "m.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(tmp_path / "m.pdf"), str(tmp_path / "page")],
                   check=True)
    png = min(tmp_path.glob("page*.png"))
    img = Image.open(png).convert("L")
    lo, hi = img.getextrema()
    dark = sum(1 for px in img.get_flattened_data() if px < 128)
    assert hi - lo > 100 and dark > 1000, "the minute renders blank"


def test_handover_state_machine_and_minutes(server, world, tmp_path):
    from console.models import DeviceRecord, HandoverEvent
    from mdm.models import Device, IdentityCertificate

    admin = client_for(server, "admin")
    sim = server.simulator()
    resp = admin.post("/console/handover/new", {"serial_number": sim.serial, "model": "iPad Air 13 inch",
                                                "unit_id": world["units"]["TCCB"]})
    record_id = int(resp.headers["location"].rsplit("/", 1)[1])
    # The same serial cannot be registered twice while it is in use.
    dup = admin.post("/console/handover/new", {"serial_number": sim.serial, "model": "x", "unit_id": world["units"]["TCCB"]})
    assert dup.status_code == 400 and "đã được đăng ký" in dup.text
    # Invalid transitions are refused with a clear message and change nothing.
    for action in ("training", "in_service", "hand_over", "return"):
        resp = admin.post(f"/console/handover/{record_id}/{action}")
        assert resp.status_code == 409 and "Không thể thực hiện" in resp.text and "Đã đăng ký thiết bị" in resp.text, action
    assert admin.post(f"/console/handover/{record_id}/enroll_token").status_code == 303
    page = admin.get(f"/console/handover/{record_id}").text
    assert "/qr.svg" in page
    qr = admin.get(f"/console/handover/{record_id}/qr.svg")
    assert qr.status_code == 200 and qr.headers["content-type"].startswith("image/svg+xml") and b"<svg" in qr.content
    with server.session() as s:
        from console.handover import enrollment_url

        url = enrollment_url(server.instance.fernet(), s.get(DeviceRecord, record_id))
    # Another iPad (wrong serial) cannot use the token bound to this serial.
    other = server.simulator()
    from tests.simulator import SimulatorError

    with pytest.raises(SimulatorError):
        other.enroll(url)
    other.close()
    # Token consumed by the failed attempt? The profile download consumed it: issue a new one.
    assert admin.post(f"/console/handover/{record_id}/enroll_token").status_code == 303
    with server.session() as s:
        url = enrollment_url(server.instance.fernet(), s.get(DeviceRecord, record_id))
    sim.enroll(url)
    server.wait_pushes()
    sim.process_commands()
    status = admin.get(f"/console/handover/{record_id}/status.json").json()
    assert status["state"] == "enrolled" and status["device"]["udid"] == sim.udid
    assert admin.post(f"/console/handover/{record_id}/assign", {"leader_id": world["leader_a"]}).status_code == 303
    assert admin.post(f"/console/handover/{record_id}/hand_over", {
        "note": "Bàn giao tại phòng họp", "it_position": "Phó Giám đốc Trung tâm Tin học",
        "condition": "Mới, nguyên hộp", "accessories": "Sạc 20W, cáp USB-C, bao da"}).status_code == 303
    with server.session() as s:
        ev = s.scalar(select(HandoverEvent).where(HandoverEvent.record_id == record_id, HandoverEvent.action == "hand_over"))
        event_id, snap = ev.id, ev.data
    assert snap["udid"] == sim.udid and snap["serial_number"] == sim.serial and snap["leader"]["full_name"] == "Nguyễn Văn An"
    assert snap["certificate"]["serial"] and snap["profiles"]
    resp = admin.get(f"/console/handover/{record_id}/minute/{event_id}.pdf")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/pdf" and resp.content.startswith(b"%PDF")
    _pdf_png_not_blank(resp.content, tmp_path)
    text = subprocess.run(["pdftotext", "-", "-"], input=resp.content, capture_output=True, check=True).stdout.decode()
    for expected in ("BIÊN BẢN", "Bàn giao máy tính bảng iPad", sim.serial, sim.udid, "Nguyễn Văn An",
                     snap["certificate"]["serial"], "ĐẠI DIỆN BÊN GIAO", "ĐẠI DIỆN BÊN NHẬN", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA",
                     "Độc lập - Tự do - Hạnh phúc", "Số: 1/BB-TTTH", "Phó Giám đốc Trung tâm Tin học", "Mới, nguyên hộp",
                     "Sạc 20W, cáp USB-C, bao da", "Biên bản kết thúc vào lúc"):
        assert expected in text, expected
    # Decree 30 date line: two-digit day, month without a leading zero from March on.
    assert re.search(r"Hà Nội, ngày \d{2} tháng (0[12]|[3-9]|1[012]) năm \d{4}", text), text[:400]
    # The closing line, the signature headings and both names are on one page.
    pages = text.split("\f")
    [signed] = [pg for pg in pages if "ĐẠI DIỆN BÊN GIAO" in pg]
    assert "Biên bản kết thúc" in signed and "Nguyễn Văn An" in signed.split("ĐẠI DIỆN BÊN GIAO")[1]
    fonts = subprocess.run(["pdffonts", "-"], input=resp.content, capture_output=True).stdout.decode() or \
        resp.content.decode("latin-1")
    assert "LiberationSerif" in fonts and "DejaVu" not in fonts
    # A reprint is identical.
    assert admin.get(f"/console/handover/{record_id}/minute/{event_id}.pdf").content == resp.content
    # An auditor reads the minute, a leader does not.
    auditor = client_for(server, "auditor")
    assert auditor.get(f"/console/handover/{record_id}/minute/{event_id}.pdf").status_code == 200
    assert auditor.post(f"/console/handover/{record_id}/training").status_code == 403
    assert admin.post(f"/console/handover/{record_id}/training").status_code == 303
    assert admin.post(f"/console/handover/{record_id}/in_service").status_code == 303
    assert admin.get(f"/console/handover/{record_id}/status.json").json()["state"] == "in_service"
    # Return: a return minute, the leader's document access ends.
    assert admin.post(f"/console/handover/{record_id}/return", {"note": "Nghỉ hưu"}).status_code == 303
    from document_gateway.service import current_assignment

    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert current_assignment(s, device.id) is None
        ret = s.scalar(select(HandoverEvent).where(HandoverEvent.record_id == record_id, HandoverEvent.action == "return"))
    minute = admin.get(f"/console/handover/{record_id}/minute/{ret.id}.pdf")
    returned = subprocess.run(["pdftotext", "-", "-"], input=minute.content, capture_output=True, check=True).stdout.decode()
    assert "Hoàn trả máy tính bảng iPad" in returned and "Số: 2/BB-TTTH" in returned  # the register goes on
    # Retire: the typed serial must match.
    resp = admin.post(f"/console/handover/{record_id}/retire", {"confirm_serial": "NOTTHESERIAL"})
    assert resp.status_code == 409 and "không khớp" in resp.text
    assert admin.post(f"/console/handover/{record_id}/retire", {"confirm_serial": sim.serial}).status_code == 303
    assert admin.get(f"/console/handover/{record_id}/status.json").json()["state"] == "retiring"
    retired_events = []
    server.hooks.subscribe("device.retired", lambda session, device: retired_events.append(device.udid))
    server.wait_pushes()
    handled = [c["Command"]["RequestType"] for c in sim.process_commands()]
    assert "EraseDevice" in handled
    assert retired_events == [sim.udid]
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.enrollment_state == "retired"
        certs = list(s.scalars(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id)))
        assert certs and all(c.revoked_at is not None and c.revocation_reason == "cessationOfOperation" for c in certs)
        record = s.get(DeviceRecord, record_id)
        assert record.state == "retired"
        actions = [e.action for e in record.events]
    assert actions == ["register", "enroll_token", "enroll_token", "enrolled", "assign", "hand_over", "training",
                       "in_service", "return", "retire", "retired"]
    # The retired iPad is refused by the MDM server from now on.
    assert sim.connect("Idle").status_code == 403
    # Nothing more can happen to a retired record.
    resp = admin.post(f"/console/handover/{record_id}/assign", {"leader_id": world["leader_a"]})
    assert resp.status_code == 409
    for x in (admin, auditor, sim):
        x.close()


def test_force_retire_lost_device(server, world):
    from console.models import DeviceRecord
    from mdm.models import Device

    admin = client_for(server, "admin")
    sim, record_id = enroll_recorded(server, admin, world["units"]["HC"])
    # A reason is required.
    resp = admin.post(f"/console/handover/{record_id}/force_retire", {"confirm_serial": sim.serial})
    assert resp.status_code == 409 and "lý do" in resp.text
    resp = admin.post(f"/console/handover/{record_id}/force_retire", {"confirm_serial": sim.serial, "note": "Thiết bị bị mất"})
    assert resp.status_code == 303
    with server.session() as s:
        assert s.get(DeviceRecord, record_id).state == "retired"
        assert s.scalar(select(Device).where(Device.udid == sim.udid)).enrollment_state == "retired"
    sim.close()
    admin.close()


def test_cancel_unenrolled_registration_revokes_token(server, world):
    from console.models import DeviceRecord

    admin = client_for(server, "admin")
    resp = admin.post("/console/handover/new", {"serial_number": "DMPQ1W2E3R4T", "model": "iPad mini", "unit_id": world["units"]["HC"]})
    record_id = int(resp.headers["location"].rsplit("/", 1)[1])
    admin.post(f"/console/handover/{record_id}/enroll_token")
    with server.session() as s:
        from console.handover import enrollment_url

        url = enrollment_url(server.instance.fernet(), s.get(DeviceRecord, record_id))
    assert admin.post(f"/console/handover/{record_id}/cancel").status_code == 303
    sim = server.simulator(serial="DMPQ1W2E3R4T")
    assert sim.fetch_profile(url).status_code == 403
    sim.close()
    admin.close()


# ------------------------------------------------------------------ policies, documents, audit, reports
def test_policy_editor_shows_validation_errors(server, world):
    import json

    sec = client_for(server, "security")
    resp = sec.post("/console/policies/new", {"body": '{"name": "x",\n "rules": [}'})
    assert resp.status_code == 400 and "dòng 2" in resp.text
    resp = sec.post("/console/policies/new", {"body": json.dumps({"name": "Bad", "rules": [{"kind": "no_such_rule"}]})})
    assert resp.status_code == 400 and "no_such_rule" in resp.text
    from compliance.rules import validate_rules  # noqa: F401  (the same validation the API uses)

    good = {"name": "Phiên bản iPadOS tối thiểu", "rules": [{"kind": "min_os_version", "version": "17.0"}],
            "assign": {"all": True, "units": []}}
    resp = sec.post("/console/policies/new", {"body": json.dumps(good, ensure_ascii=False)})
    assert resp.status_code == 302, resp.text
    policy_url = resp.headers["location"]
    page = sec.get(policy_url)
    assert "Phiên bản iPadOS tối thiểu" in page.text
    # Editing with a stale version is refused (someone else saved meanwhile).
    resp = sec.post(policy_url, {"body": json.dumps({**good, "grace_hours": 24}), "version": "0"})
    assert resp.status_code == 409 and "người khác sửa" in resp.text
    resp = sec.post(policy_url, {"body": json.dumps({**good, "grace_hours": 24}), "version": "1"})
    assert resp.status_code == 302
    auditor = client_for(server, "auditor")
    assert auditor.get(policy_url).status_code == 200
    assert auditor.post(policy_url, {"body": "{}", "version": "2"}).status_code == 403
    sec.close()
    auditor.close()


def test_audit_log_viewer_filters_and_pages(server, world):
    from document_gateway import audit as gw_audit

    with server.session() as s:
        for i in range(30):
            gw_audit.append(s, server.instance.audit_key, at=dt.datetime.now(dt.UTC), action="view", decision="deny" if i % 3 else "allow",
                            reason_code="verdict_non_compliant" if i % 3 else "allowed", reason_vi="Thiết bị không tuân thủ",
                            reason_en="Device not compliant", http_status=403 if i % 3 else 200,
                            device_udid=f"UDID-{i % 2}", leader_name="Nguyễn Văn An", leader_id=world["leader_a"])
    auditor = client_for(server, "auditor")
    page = auditor.get("/console/audit")
    assert page.status_code == 200 and "Tổng: <b>30</b>" in page.text and "class=\"next\"" in page.text
    page = auditor.get("/console/audit", params={"decision": "allow"})
    assert "Tổng: <b>10</b>" in page.text
    page = auditor.get("/console/audit", params={"device": "UDID-1", "decision": "deny"})
    assert "Tổng: <b>10</b>" in page.text
    page = auditor.get("/console/audit", params={"page": 2})
    assert "Trang 2/2" in page.text
    page = auditor.get("/console/audit", params={"verify": "1"})
    assert "Chuỗi nhật ký nguyên vẹn" in page.text
    auditor.close()


def test_documents_page_matrix_and_roles(server, world):
    sec = client_for(server, "security")
    page = sec.get("/console/documents")
    # The classification matrix: secret is never on a mobile device.
    assert page.status_code == 200 and "Thuộc bí mật nhà nước" in page.text and "✗" in page.text
    assert sec.post("/console/documents", {"document": "unknown", "action": "withdraw"}).status_code == 404
    auditor = client_for(server, "auditor")
    assert auditor.get("/console/documents").status_code == 200
    assert auditor.post("/console/documents", {"document": "x", "action": "withdraw"}).status_code == 403
    sec.close()
    auditor.close()


def test_report_generation_status_and_download(server, world):
    import time

    sec = client_for(server, "security")
    resp = sec.post("/console/reports/generate", {"kind": "monthly", "period": "2026-13", "lang": "vi", "formats": "pdf"})
    assert resp.status_code == 303
    assert "period" in sec.get("/console/reports").text
    resp = sec.post("/console/reports/generate", {"kind": "monthly", "period": "2026-10", "lang": "vi", "formats": "pdf"})
    assert resp.status_code == 303
    report_id = int(resp.headers["location"].rsplit("=", 1)[1])
    deadline = time.time() + 180
    while True:
        status = sec.get(f"/console/reports/{report_id}/status.json").json()
        if status["status"] in ("done", "failed") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert status["status"] == "done", status
    pdf = sec.get(f"/console/reports/{report_id}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    leader = client_for(server, "leader")
    assert leader.get(f"/console/reports/{report_id}/pdf").status_code == 403
    admin = client_for(server, "admin")
    assert admin.post("/console/reports/generate", {"kind": "monthly", "period": "2026-10"}).status_code == 403
    for x in (sec, leader, admin):
        x.close()
