"""#18, item 3: compliance policies edited as a form (rule kinds with their parameters, actions, periods,
assignment), the JSON as the advanced view, errors in the reader's language, over real HTTPS."""
from __future__ import annotations

import json
import re

from tests.test_console_support import client_for, seed


def _form(name="Thiết bị lãnh đạo", **extra):
    data = {"mode": "form", "name": name, "description": "Áp dụng cho iPad của lãnh đạo", "enabled": "on",
            "rule.min_os_version": "on", "rule.min_os_version.version": "17.4",
            "rule.last_checkin_within_hours": "on", "rule.last_checkin_within_hours.hours": "72",
            "rule.required_profiles": "on", "rule.required_profiles.identifiers": "vn.gov.vpcp.vpn\nvn.gov.vpcp.wifi",
            "rule.passcode_present": "on", "rule.passcode_present.immediate": "1",
            "action.notify": "on", "action.notify.recipients": "attt@vpcp.gov.vn, it@vpcp.gov.vn",
            "action.lost_mode": "on", "action.lost_mode.phone_number": "024 3823 4567",
            "action.cut_vpn": "on",
            "grace_hours": "48", "escalation_hours": "", "assign_all": "0", "assign_units": ["TCCB", "HC"]}
    data.update(extra)
    return data


def _api(server):
    return server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"})


def test_policy_made_with_the_form_is_what_the_api_returns(server):
    seed(server)
    sec = client_for(server, "security")
    page = sec.get("/console/policies/new").text
    # Every rule kind is offered by its name, with its parameters; no raw code as the visible label.
    for words in ("Phiên bản hệ điều hành tối thiểu", "Kết nối định kỳ với máy chủ", "Hồ sơ cấu hình bắt buộc",
                  "Ngắt kết nối mạng riêng ảo (VPN)", "Bật Chế độ mất", "Thời hạn khắc phục (giờ)", "Toàn cơ quan"):
        assert words in page, words
    assert 'id="policy-json"' in page and "Dạng JSON (nâng cao)" in page
    resp = sec.post("/console/policies/new", _form())
    assert resp.status_code == 302, re.findall(r'id="error">([^<]*)', resp.text)
    policy_id = int(resp.headers["location"].rsplit("/", 1)[1])
    with _api(server) as api:
        saved = api.get(f"/api/v1/policies/{policy_id}").json()
    assert saved["rules"] == [
        {"kind": "min_os_version", "version": "17.4"},
        {"kind": "passcode_present", "immediate": True},
        {"kind": "required_profiles", "identifiers": ["vn.gov.vpcp.vpn", "vn.gov.vpcp.wifi"]},
        {"kind": "last_checkin_within_hours", "hours": 72},
    ]  # in the order compliance lists its rule kinds
    actions = {a["type"]: a for a in saved["actions"]}
    assert set(actions) == {"notify", "cut_vpn", "lost_mode"}
    assert actions["notify"]["recipients"] == ["attt@vpcp.gov.vn", "it@vpcp.gov.vn"]
    assert actions["lost_mode"]["phone_number"] == "024 3823 4567"
    assert saved["grace_hours"] == 48 and saved["escalation_hours"] is None
    assert saved["assign"]["all"] is False and sorted(saved["assign"]["units"]) == ["HC", "TCCB"]
    # The page shows it back in the form, checked and filled.
    page = sec.get(f"/console/policies/{policy_id}").text
    assert 'id="rule-min_os_version" checked' in page and 'value="17.4"' in page
    assert 'id="action-notify" checked' in page and 'id="assign-unit-TCCB" value' not in page
    assert re.search(r'value="TCCB" id="assign-unit-TCCB" checked', page)
    # Editing in the form: a new version.
    resp = sec.post(f"/console/policies/{policy_id}", _form(**{"grace_hours": "24", "version": str(saved["version"])}))
    assert resp.status_code == 302
    with _api(server) as api:
        again = api.get(f"/api/v1/policies/{policy_id}").json()
    assert again["grace_hours"] == 24 and again["version"] == saved["version"] + 1
    sec.close()


def test_form_errors_are_in_the_readers_language_and_nothing_is_saved(server):
    seed(server)
    sec = client_for(server, "security")
    cases = [
        ({"rule.min_os_version.version": "mười bảy"}, "Quy tắc 1 (Phiên bản hệ điều hành tối thiểu), tham số “phiên bản”: "
                                                       "cần một phiên bản dạng 17.0 hoặc 17.4.1"),
        ({"rule.last_checkin_within_hours.hours": "ba ngày"}, "tham số “số giờ”: cần một số nguyên từ 1 đến 8.760"),
        ({"rule.required_profiles.identifiers": ""}, "(Hồ sơ cấu hình bắt buộc): vui lòng nhập định danh hồ sơ"),
        ({"action.notify.recipients": "không-phải-thư"}, "Biện pháp 1 (Gửi thư thông báo)"),
        ({"grace_hours": "-1"}, "Thời hạn khắc phục (giờ): cần một số nguyên từ 0 đến"),
        ({"name": ""}, "Vui lòng nhập tên chính sách"),
        ({"assign_units": ["KHONG-CO"]}, "Không có đơn vị mã “KHONG-CO”"),
    ]
    for change, words in cases:
        resp = sec.post("/console/policies/new", _form(**change))
        assert resp.status_code == 400, change
        error = re.search(r'id="error">([^<]*)<', resp.text).group(1)
        assert words in error.replace("&#34;", '"'), (change, error)
        assert "must be" not in error and "rules[" not in error  # no English, no JSON path
        assert 'id="policy-form"' in resp.text  # the form comes back with what was typed
    with _api(server) as api:
        assert all(p["name"] != "Thiết bị lãnh đạo" for p in api.get("/api/v1/policies").json()["policies"])
    # The same refusal in English after the switch.
    sec.post("/console/lang", {"lang": "en"})
    resp = sec.post("/console/policies/new", _form(**{"rule.min_os_version.version": "x"}))
    assert resp.status_code == 400 and "must be a version like 17.0" in resp.text
    # Two policies with one name: 409 with the reason.
    sec.post("/console/lang", {"lang": "vi"})
    assert sec.post("/console/policies/new", _form(name="Trùng tên")).status_code == 302
    dup = sec.post("/console/policies/new", _form(name="Trùng tên"))
    assert dup.status_code == 409 and "Đã có chính sách tên “Trùng tên”" in dup.text
    sec.close()


def test_json_view_still_edits_and_takes_what_the_form_cannot_hold(server):
    seed(server)
    sec = client_for(server, "security")
    body = {"name": "Hai mức OS", "rules": [{"kind": "min_os_version", "version": "17.0"},
                                            {"kind": "min_os_version", "version": "17.2"}],
            "assign": {"all": True, "units": []}}
    resp = sec.post("/console/policies/new", {"mode": "json", "body": json.dumps(body, ensure_ascii=False)})
    assert resp.status_code == 302
    page = sec.get(resp.headers["location"]).text
    assert 'id="policy-json-only"' in page and '<details id="policy-json" open' in page
    bad = sec.post("/console/policies/new", {"mode": "json", "body": json.dumps({"name": "X", "rules": [{"kind": "nope"}]})})
    assert bad.status_code == 400 and "không có loại quy tắc “nope”" in bad.text
    sec.close()
