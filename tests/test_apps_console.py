"""The apps pages of the console: IT uploads, an officer records the acceptance with its minute,
progress per unit and per iPad, refusals in Vietnamese (English on the switch)."""
from __future__ import annotations

import pytest

from tests.ipa_builder import build_ipa
from tests.test_apps import BUNDLE, sync
from tests.test_console_support import client_for, seed
from tests.test_gateway import api


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_console_release_workflow(server):
    seed(server)  # pilot units TCCB, HC, TTTH
    assert api(server, "it_admin").post("/api/v1/apps", json={"bundle_id": BUNDLE, "name": "Văn bản điều hành",
                                                               "kind": "inhouse"}).status_code == 201
    sim = server.simulator()
    sim.enroll(server.enrollment_url(unit_code="TTTH"))
    server.wait_pushes()
    sim.process_commands()
    admin, sec = client_for(server, "admin"), client_for(server, "security")
    page = f"/console/apps/{BUNDLE}"
    assert admin.get(page).status_code == 200
    r = admin.post(page, {"action": "upload"}, files={"ipa": ("vanban.ipa", b"not an app", "application/octet-stream")})
    assert r.status_code == 400 and "tệp không phải là gói ứng dụng .ipa" in r.text and "zip" not in r.text
    r = admin.post(page, {"action": "upload"}, files={"ipa": ("vanban.ipa", build_ipa(version="1.0"), "application/octet-stream")})
    assert r.status_code == 302, r.text
    sync(server, sim)
    text = admin.get(page).text
    assert "Thí điểm" in text and "Đã cài đặt" in text and sim.udid in text
    # Only the officer records the acceptance, with the minute attached.
    minute = {"minute": ("bien-ban.pdf", b"%PDF-1.4 bien ban nghiem thu", "application/pdf")}
    assert admin.post(page, {"action": "accept", "version": "1.0"}, files=minute).status_code == 403
    r = sec.post(page, {"action": "accept", "version": "1.0"})
    assert r.status_code == 400 and "Vui lòng đính kèm biên bản nghiệm thu" in r.text
    r = sec.post(page, {"action": "accept", "version": "1.0", "notes": "Nghiệm thu 01/12/2026"}, files=minute)
    assert r.status_code == 302, r.text
    text = sec.get(page).text
    assert "Đã nghiệm thu" in text and "Nghiệm thu 01/12/2026" in text
    assert sec.post(page, {"action": "pause", "version": "1.0"}).status_code == 403
    listing = admin.get("/console/apps").text
    assert "Văn bản điều hành" in listing and "1.0" in listing
    admin.post("/console/lang", {"lang": "en"})
    assert "Accepted" in admin.get(page).text
    for c in (admin, sec):
        c.close()
    sim.close()
