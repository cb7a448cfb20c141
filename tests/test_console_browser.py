"""The console in a real browser: headless Debian Chromium driven by Selenium through Debian's chromedriver.

The live server keeps its real TLS (instance CA). Chromium is told to accept exactly that server key
(--ignore-certificate-errors-spki-list with the SHA-256 of its SubjectPublicKeyInfo), so the session
cookie keeps its Secure flag and nothing else about TLS is relaxed.
"""
from __future__ import annotations

import base64
import hashlib
import shutil
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.test_console_support import PASSWORD, seed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

@pytest.fixture(autouse=True, scope="module")
def _chromium_installed():
    # `bash scripts/test` installs them: a missing browser is a broken machine, not a reason to skip.
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: install Debian's {package} (bash scripts/test does)")


def _spki_hash(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def browser(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 f"--ignore-certificate-errors-spki-list={_spki_hash(server.instance.server_cert_path)}"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False, "intl.accept_languages": "vi"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.implicitly_wait(0)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _wait(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _login(driver, server, username):
    from selenium.webdriver.common.by import By

    driver.get(server.url + "/console/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    _wait(lambda: "/console/login" not in driver.current_url, what="sign-in")


def _text(driver, element_id):
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):  # the page is reloading
        return ""


def _expect_text(driver, element_id, expected, timeout=30):
    """After a click the page reloads: wait for the new page, then compare (the wait is a
    bound for a stuck page, not a timing assertion)."""
    try:
        _wait(lambda: _text(driver, element_id) == expected, timeout, what=f"#{element_id} = {expected!r}")
    except AssertionError:
        assert _text(driver, element_id) == expected


def _click(driver, element_id):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def _download(driver, pattern, timeout=60) -> Path:
    def done():
        files = [p for p in driver.downloads.glob(pattern) if not p.name.endswith(".crdownload")]
        return files[0] if files and files[0].stat().st_size > 0 else None

    return _wait(done, timeout, what=f"download {pattern}")


def test_handover_from_registration_to_in_service(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    world = seed(server)
    sim = server.simulator()
    _login(browser, server, "admin")
    # 1. Register the iPad.
    _click(browser, "nav-handover")
    _click(browser, "register-device")
    browser.find_element(By.ID, "serial_number").send_keys(sim.serial)
    browser.find_element(By.ID, "model").send_keys("iPad Pro 11 inch (M4)")
    Select(browser.find_element(By.ID, "unit_id")).select_by_value(str(world["units"]["TCCB"]))
    _click(browser, "register-submit")
    _expect_text(browser, "record-state", "Đã đăng ký thiết bị")
    # 2. Enrollment token and its QR code.
    _click(browser, "action-enroll_token")
    _expect_text(browser, "record-state", "Chờ cài đặt quản lý (MDM)")
    qr = browser.find_element(By.ID, "qr")
    _wait(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", qr), what="QR image")
    url = _text(browser, "enrollment-url")
    assert url.startswith(server.url + "/mdm/enroll?token=")
    # 3. The iPad (simulator) enrolls against the same server; the page notices by polling.
    sim.enroll(url)
    server.wait_pushes()
    sim.process_commands()
    _wait(lambda: _text(browser, "record-state") == "Đã cài đặt quản lý (MDM)", 30, "enrolled state")
    _wait(lambda: browser.find_elements(By.ID, "action-assign"), 10, "assign button after reload")
    _expect_text(browser, "device-link", sim.udid)
    # 4. Assign to a leader, 5. hand over with the minute, 6. training, 7. in service.
    Select(browser.find_element(By.ID, "leader_id")).select_by_value(str(world["leader_a"]))
    _click(browser, "action-assign")
    _expect_text(browser, "leader", "Nguyễn Văn An")
    _click(browser, "action-hand_over")
    _expect_text(browser, "record-state", "Đã bàn giao")
    browser.find_element(By.CSS_SELECTOR, "a.minute").click()
    minute = _download(browser, "bien-ban-ban-giao-*.pdf")
    assert minute.read_bytes().startswith(b"%PDF")
    _click(browser, "action-training")
    _expect_text(browser, "record-state", "Đã hướng dẫn sử dụng")
    _click(browser, "action-in_service")
    _expect_text(browser, "record-state", "Đang sử dụng")
    history = _text(browser, "history")
    for step in ("Đăng ký thiết bị", "Tạo mã cài đặt MDM", "Thiết bị đã cài đặt MDM", "Gán cho lãnh đạo",
                 "Lập biên bản bàn giao", "Xác nhận đã hướng dẫn", "Đưa vào sử dụng"):
        assert step in history, step
    # The overview counts it, and the English switch works.
    browser.get(server.url + "/console/")
    _expect_text(browser, "count-in_service", "1")
    _click(browser, "lang-en")
    _wait(lambda: "Fleet overview" in browser.page_source, what="the English page")
    browser.save_screenshot(str(tmp_path / "overview.png"))
    sim.close()


def test_security_officer_downloads_a_report(server, browser):
    from selenium.webdriver.common.by import By

    seed(server)
    _login(browser, server, "security")
    _click(browser, "nav-reports")
    period = browser.find_element(By.ID, "report-period")
    period.clear()
    period.send_keys("2026-10")
    _click(browser, "report-generate")
    # The status cell is polled by console.js until the report is done, then the links appear.
    link = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "a.download[id$='-pdf']"), 180, "report link")[0]
    link.click()
    report = _download(browser, "*.pdf")
    assert report.read_bytes().startswith(b"%PDF")


SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-screenshots"


def test_dashboard_shows_devices_needing_action_and_compliance_over_time(server, browser, tmp_path):
    """The fleet at a glance (#18, item 5): each need is a count linking to its list; the chart
    replays the verdict history; the English switch keeps the same picture."""
    import datetime as dt

    from selenium.webdriver.common.by import By

    from compliance import DeviceVerdict
    from mdm.models import Device

    seed(server)
    sims = []
    for _ in range(3):
        sim = server.simulator()
        sim.enroll(server.enrollment_url())
        server.wait_pushes()
        sim.process_commands()
        sims.append(sim)
    from sqlalchemy import select

    with server.session() as s:
        s.scalar(select(Device).where(Device.udid == sims[0].udid)).lost_mode_enabled = True
        away = s.scalar(select(Device).where(Device.udid == sims[1].udid))
        away.last_seen_at = away.last_seen_at - dt.timedelta(days=5)
        s.get(DeviceVerdict, away.id).state = "non_compliant"
    _login(browser, server, "admin")
    browser.get(server.url + "/console/")
    counts = {code: browser.find_element(By.CSS_SELECTOR, f"#need-{code} .big").text
              for code in ("non_compliant", "grace_ending", "cert_expiring", "not_seen", "lost_mode")}
    assert counts == {"non_compliant": "1", "grace_ending": "0", "cert_expiring": "0", "not_seen": "1",
                      "lost_mode": "1"}, counts
    bars = browser.find_elements(By.CSS_SELECTOR, "#compliance-chart rect")
    assert len(bars) >= 3  # today's day at least: three stacked parts
    assert "Cần xử lý" in browser.page_source and "not_seen" not in browser.find_element(By.ID, "needs").text
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-vi.png"))
    _click(browser, "need-lost_mode")
    _wait(lambda: "need=lost_mode" in browser.current_url, what="the filtered list")
    table = browser.find_element(By.ID, "device-table").text
    assert sims[0].serial in table and sims[1].serial not in table and sims[2].serial not in table
    assert "Đang ở chế độ mất" in browser.find_element(By.ID, "need-filter").text
    browser.get(server.url + "/console/")
    _click(browser, "lang-en")
    _wait(lambda: "Needing action" in browser.page_source, what="the English dashboard")
    assert "Not seen for 3 days or more" in browser.find_element(By.ID, "needs").text
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-en.png"))
    for sim in sims:
        sim.close()


def test_ipad_handed_over_with_a_usb_token_in_the_browser(server, browser, tmp_path):
    """#18: the IT officer registers a leader's signing USB token, hands it over with the iPad on one
    minute, and reads the registry in Vietnamese and English (screenshots in test-screenshots/)."""
    import subprocess

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.test_console_support import client_for, enroll_recorded
    from tests.test_usb_tokens import der, leader_cert, make_state_ca

    world = seed(server)
    ca = make_state_ca()
    cert_file = tmp_path / "nguyen-van-an.cer"
    cert_file.write_bytes(der(leader_cert(ca, "Nguyễn Văn An", days=400)))
    admin_http = client_for(server, "admin")
    sim, record_id = enroll_recorded(server, admin_http, world["units"]["TCCB"])
    admin_http.close()
    _login(browser, server, "admin")
    _click(browser, "nav-usb-tokens")
    _click(browser, "usb-token-new")
    browser.find_element(By.ID, "serial_number").send_keys("TK7788")
    browser.find_element(By.ID, "kind").send_keys("Token Ban Cơ yếu")
    browser.find_element(By.ID, "certificate").send_keys(str(cert_file))
    _click(browser, "usb-token-submit")
    _expect_text(browser, "token-state", "Trong kho")
    _expect_text(browser, "cert-holder", "Nguyễn Văn An")
    # The iPad's record: assign, then hand over with the token on the same minute.
    browser.get(f"{server.url}/console/handover/{record_id}")
    Select(browser.find_element(By.ID, "leader_id")).select_by_value(str(world["leader_a"]))
    _click(browser, "action-assign")
    _expect_text(browser, "leader", "Nguyễn Văn An")
    Select(browser.find_element(By.ID, "hand_over-usb_token")).select_by_visible_text(
        browser.find_element(By.CSS_SELECTOR, "#hand_over-usb_token option:nth-child(2)").text)
    browser.find_element(By.ID, "hand_over-accessories").send_keys("Sạc, cáp USB-C, USB token")
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "handover-with-usb-token-vi.png"))
    _click(browser, "action-hand_over")
    _expect_text(browser, "record-state", "Đã bàn giao")
    browser.find_element(By.CSS_SELECTOR, "a.minute").click()
    minute = _download(browser, "bien-ban-ban-giao-*.pdf")
    text = subprocess.run(["pdftotext", "-layout", str(minute), "-"], capture_output=True, text=True, check=True).stdout
    assert "TK7788" in text and "bàn giao kèm theo" in text
    _click(browser, "nav-usb-tokens")
    table = _text(browser, "usb-tokens")
    assert "TK7788" in table and "Đã bàn giao" in table and "Nguyễn Văn An" in table
    browser.save_screenshot(str(SCREENSHOTS / "usb-tokens-vi.png"))
    _click(browser, "lang-en")
    _wait(lambda: "Signing USB tokens" in browser.page_source, what="the English registry")
    assert "Handed over" in _text(browser, "usb-tokens")
    browser.save_screenshot(str(SCREENSHOTS / "usb-tokens-en.png"))
    sim.close()


def test_security_officer_writes_a_policy_with_the_form(server, browser):
    """#18, item 3, in the browser: rules with their parameters, a mistake explained in Vietnamese, the
    saved policy shown back, the English switch (screenshots in test-screenshots/)."""
    from selenium.webdriver.common.by import By

    seed(server)
    _login(browser, server, "security")
    _click(browser, "nav-policies")
    _click(browser, "policy-new")
    browser.find_element(By.ID, "policy-name").send_keys("iPad lãnh đạo — tối thiểu")
    hours = browser.find_element(By.ID, "rule-last_checkin_within_hours-hours")
    _click(browser, "rule-last_checkin_within_hours")
    hours.clear()
    hours.send_keys("ba ngày")
    _click(browser, "rule-passcode_present")
    _click(browser, "action-cut_vpn")
    _click(browser, "assign-all")
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "policy-form-vi.png"))
    _click(browser, "policy-save")
    error = _wait(lambda: _text(browser, "error"), what="the form's error")
    assert "Kết nối định kỳ với máy chủ" in error and "cần một số nguyên" in error
    assert browser.find_element(By.ID, "policy-name").get_attribute("value") == "iPad lãnh đạo — tối thiểu"
    browser.save_screenshot(str(SCREENSHOTS / "policy-form-error-vi.png"))
    hours = browser.find_element(By.ID, "rule-last_checkin_within_hours-hours")
    hours.clear()
    hours.send_keys("72")
    _click(browser, "policy-save")
    _wait(lambda: "/console/policies/" in browser.current_url and "/new" not in browser.current_url, what="saved")
    assert browser.find_element(By.ID, "rule-last_checkin_within_hours").is_selected()
    assert browser.find_element(By.ID, "rule-last_checkin_within_hours-hours").get_attribute("value") == "72"
    assert browser.find_element(By.ID, "action-cut_vpn").is_selected()
    _click(browser, "lang-en")
    _wait(lambda: "Recent check-in" in browser.page_source, what="the English form")
    assert "Cut the VPN" in browser.page_source and "Remediation period (hours)" in browser.page_source
    browser.save_screenshot(str(SCREENSHOTS / "policy-form-en.png"))
