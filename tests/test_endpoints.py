"""Endpoints no other test went through end to end, over real HTTPS."""
from __future__ import annotations

import io
import plistlib
import ssl
import time
import zipfile

import httpx
import pytest
from cryptography import x509
from sqlalchemy import select

from tests.test_console_support import client_for, seed
from tests.test_gateway import gw, pem_files, upload, world  # noqa: F401  (fixtures)


def test_ca_certificate_download(server):
    with server.http() as http:
        r = http.get("/mdm/ca")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-x509-ca-cert"
    assert x509.load_der_x509_certificate(r.content) == server.instance.ca.certificate
    assert "ipad-mdm-ca.cer" in r.headers["content-disposition"]


def test_mdm_check_in_authenticated_by_the_tls_client_certificate(server, enrolled, tmp_path):
    """Without Mdm-Signature, the embedded server takes the identity from its own TLS handshake."""
    body = plistlib.dumps({"UDID": enrolled.udid, "Status": "Idle"})
    ctx = ssl.create_default_context(cafile=server.ca_path)
    ctx.load_cert_chain(*pem_files(tmp_path, enrolled.identity, enrolled.key))
    with httpx.Client(verify=ctx, timeout=30) as mtls:
        assert mtls.put(enrolled.mdm_payload["ServerURL"], content=body).status_code == 200
        other = plistlib.dumps({"UDID": "0000BBBB-1111-2222-3333-444455556666", "Status": "Idle"})
        assert mtls.put(enrolled.mdm_payload["ServerURL"], content=other).status_code == 403
    with server.http() as plain:  # neither a signature nor a client certificate
        r = plain.put(enrolled.mdm_payload["ServerURL"], content=body)
    assert r.status_code == 401 and "Mdm-Signature missing" in r.json()["error"]


def test_document_metadata_and_withdrawal_api(world):
    doc_id = world.doc["id"]
    r = world.officer.get(f"/api/v1/documents/{doc_id}")
    assert r.status_code == 200 and r.json()["title"] == "Báo cáo tháng 11" and r.json()["withdrawn_at"] is None
    assert world.admin.get(f"/api/v1/documents/{doc_id}").status_code == 403
    assert world.officer.get("/api/v1/documents/not-a-document-id").status_code == 404
    assert world.ipad.get(f"/docs/{doc_id}").status_code == 200
    r = world.officer.delete(f"/api/v1/documents/{doc_id}")
    assert r.status_code == 200 and r.json()["withdrawn_at"]
    assert world.ipad.get(f"/docs/{doc_id}").status_code == 404  # withdrawn: gone for the leader
    assert world.officer.get(f"/api/v1/documents/{doc_id}").json()["withdrawn_at"] == r.json()["withdrawn_at"]


def test_assignment_read_api(world):
    r = world.admin.get(f"/api/v1/devices/{world.sim.udid}/assignment")
    assert r.status_code == 200 and r.json()["leader_id"] == world.leader["id"] and r.json()["device"] == world.sim.udid
    assert world.admin.delete(f"/api/v1/devices/{world.sim.udid}/assignment").status_code == 200
    assert world.admin.get(f"/api/v1/devices/{world.sim.udid}/assignment").status_code == 404
    assert world.auditor.get(f"/api/v1/devices/{world.sim.udid}/assignment").status_code == 403


def test_console_leaders_policies_and_command_status(server, enrolled):
    ids = seed(server)
    admin = client_for(server, "admin")
    r = admin.post("/console/leaders", {"full_name": "Đỗ Thị Hoa", "unit_id": ids["units"]["HC"], "role": "director",
                                        "title": "Phó Chánh Văn phòng"})
    assert r.status_code == 302
    assert "Đỗ Thị Hoa" in admin.get("/console/leaders").text
    r = admin.post("/console/leaders", {"full_name": "", "unit_id": ids["units"]["HC"], "role": "director"})
    assert r.status_code == 400
    assert client_for(server, "auditor").post("/console/leaders", {"full_name": "X"}).status_code == 403

    security = client_for(server, "security")
    with server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"}) as api:
        policy = api.get("/api/v1/policies").json()["policies"][0]
    page = security.get(f"/console/policies/{policy['id']}")
    assert page.status_code == 200 and policy["name"] in page.text
    body = {k: policy[k] for k in ("name", "description", "enabled", "rules", "actions", "grace_hours",
                                   "escalation_hours", "assign")}
    body["grace_hours"] = 12
    import json

    r = security.post(f"/console/policies/{policy['id']}", {"body": json.dumps(body), "version": policy["version"]})
    assert r.status_code == 302
    with server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"}) as api:
        saved = api.get(f"/api/v1/policies/{policy['id']}").json()
    assert saved["grace_hours"] == 12 and saved["version"] == policy["version"] + 1
    stale = security.post(f"/console/policies/{policy['id']}", {"body": json.dumps(body), "version": policy["version"]})
    assert stale.status_code == 409  # edited meanwhile: reload and apply again
    assert admin.post(f"/console/policies/{policy['id']}", {"body": "{}", "version": "1"}).status_code == 403

    with server.session() as s:
        from mdm.models import Command, Device

        device = s.scalar(select(Device).where(Device.udid == enrolled.udid))
        cmd = s.scalars(select(Command).where(Command.device_id == device.id)).first()
    r = admin.get(f"/console/commands/{cmd.uuid}.json")
    assert r.status_code == 200 and r.json() == {"uuid": cmd.uuid, "status": "acknowledged",
                                                 "request_type": cmd.request_type, "label": "Đã thực hiện"}
    assert admin.get("/console/commands/no-such-command.json").status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_report_downloads_over_http(server):
    with server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"}) as api:
        r = api.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-10", "formats": ["xlsx", "csv"]})
        assert r.status_code == 202, r.text
        report_id = r.json()["id"]
        for _ in range(600):  # an upper bound for a stuck generation, not a timing check
            state = api.get(f"/api/v1/reports/{report_id}").json()
            if state["status"] in ("done", "failed"):
                break
            time.sleep(0.2)
        assert state["status"] == "done", state
        xlsx = api.get(f"/api/v1/reports/{report_id}/xlsx")
        csv_zip = api.get(f"/api/v1/reports/{report_id}/csv")
        assert api.get(f"/api/v1/reports/{report_id}/pdf").status_code == 404  # not asked for
    assert xlsx.status_code == 200 and xlsx.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(xlsx.content))
    assert "Tóm tắt" in book.sheetnames and book["Tóm tắt"].max_row > 1
    assert csv_zip.status_code == 200
    with zipfile.ZipFile(io.BytesIO(csv_zip.content)) as z:
        names = z.namelist()
        summary = next(n for n in names if n.endswith("_summary.csv"))
        assert z.read(summary).decode("utf-8-sig").count("\n") > 1
