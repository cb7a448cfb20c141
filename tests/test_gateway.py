"""Document gateway end to end: a live server over real TLS, simulated iPads presenting their
real SCEP identity certificates as TLS client certificates, the real compliance engine, real
pyHanko-signed PDFs, and the hash-chained audit log.
"""
from __future__ import annotations

import datetime as dt
import io
import secrets
import ssl
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from compliance import clock
from document_gateway import audit
from document_gateway.cli import gateway as gateway_cli
from document_gateway.models import GatewayAuditEvent
from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit
from mdm.identity import revoke_identity
from mdm.models import Device, IdentityCertificate
from tests.conftest import retire_baseline_policy, start_live_server

H = dt.timedelta(hours=1)


# Production runs on PostgreSQL: every test here runs on both backends.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


# ------------------------------------------------------------------ helpers
def pem_files(tmp_path: Path, cert: x509.Certificate, key) -> tuple[str, str]:
    name = secrets.token_hex(4)
    c, k = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(c), str(k)


def ipad_client(server, tmp_path: Path, sim, **kw) -> httpx.Client:
    """What the leader's iPad does: TLS with its MDM identity certificate as client certificate."""
    ctx = ssl.create_default_context(cafile=server.ca_path)
    ctx.load_cert_chain(*pem_files(tmp_path, sim.identity, sim.key))
    return httpx.Client(verify=ctx, base_url=server.url, timeout=30, **kw)


def self_signed_ca(cn: str):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - H).not_valid_after(now + 365 * 24 * H)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert, ca_key, cn: str, *, signer: bool = False):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = utcnow()
    b = (x509.CertificateBuilder().subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Văn phòng Chính phủ")]))
         .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - H).not_valid_after(now + 30 * 24 * H))
    if signer:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
    return b.sign(ca_key, hashes.SHA256()), key


def make_pdf(text_line: str) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pageCompression=0)  # uncompressed, so a test can tamper with the text
    c.drawString(72, 720, text_line)
    c.showPage()
    c.save()
    return buf.getvalue()


def sign_pdf(pdf: bytes, tmp_path: Path, cert, key, ca_cert) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers

    from document_gateway.signatures import sync_asn1_oid_maps

    sync_asn1_oid_maps()
    cert_file, key_file = pem_files(tmp_path, cert, key)
    ca_file = tmp_path / "signing-ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    signer = signers.SimpleSigner.load(key_file, cert_file, ca_chain_files=(str(ca_file),))
    out = signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)),
                           signers.PdfSignatureMetadata(field_name="ChuKySo"), signer=signer)
    return out.getvalue()


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def gw(tmp_path, database_url):
    srv = start_live_server(tmp_path, database_url,
                            extra={"document_max_bytes": 300_000})
    try:
        yield srv
    finally:
        srv.stop()


class World:
    """A server with a unit, a leader, an enrolled compliant iPad assigned to them, and documents."""


def api(server, role):
    return server.http(headers={"Authorization": f"Bearer {server.api_token(role)}"})


def make_unit(server, code, name):
    with server.session() as s:
        u = Unit(code=code, name_vi=name, name_en=code)
        s.add(u)
        s.flush()
        return u.id


def enroll(server):
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    return sim


def refresh(admin, sim):
    r = admin.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "SecurityInfo"})
    assert r.status_code == 201, r.text
    sim.process_commands()


def upload(officer, name: str, content: bytes, **form):
    data = {"title": form.pop("title", name), "unit": form.pop("unit", "TTTH"),
            "classification": form.pop("classification", "internal"), **form}
    return officer.post("/api/v1/documents", data=data, files={"file": (name, content)})


def share_documents(first, second):
    """Processes of one deployment share the instance folder; test servers each have their own."""
    second.app.extensions["document_gateway.store"] = first.app.extensions["document_gateway.store"]


def verdict_state(server, sim):
    import compliance

    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        v = compliance.current_verdict(s, device.id)
        return v.state if v else None


@pytest.fixture
def world(gw, tmp_path):
    w = World()
    w.server = gw
    w.admin, w.officer, w.auditor = api(gw, "it_admin"), api(gw, "security_officer"), api(gw, "auditor")
    w.unit_id = make_unit(gw, "TTTH", "Trung tâm Tin học")
    w.other_unit_id = make_unit(gw, "VHC", "Vụ Hành chính")
    retire_baseline_policy(w.officer)  # these tests pin the gateway to one policy of their own
    r = w.officer.post("/api/v1/policies", json={"name": "Cơ bản", "rules": [{"kind": "passcode_present"}],
                                                   "grace_hours": 0, "assign": {"all": True},
                                                   "actions": ["block_gateway"]})
    assert r.status_code == 201, r.text
    w.policy_id = r.json()["id"]
    w.sim = enroll(gw)
    refresh(w.admin, w.sim)
    assert verdict_state(gw, w.sim) == "compliant"
    r = w.admin.post("/api/v1/leaders", json={"full_name": "Nguyễn Văn An", "title": "Giám đốc Trung tâm Tin học",
                                               "unit": "TTTH", "role": "director"})
    assert r.status_code == 201, r.text
    w.leader = r.json()
    r = w.admin.put(f"/api/v1/devices/{w.sim.udid}/assignment", json={"leader_id": w.leader["id"]})
    assert r.status_code == 200, r.text
    w.content = b"Bao cao thang 11: so lieu an toan thong tin.\n" + "Tiếng Việt có dấu.\n".encode() * 50
    r = upload(w.officer, "bao-cao.txt", w.content, title="Báo cáo tháng 11")
    assert r.status_code == 201, r.text
    w.doc = r.json()
    w.ipad = ipad_client(gw, tmp_path, w.sim)
    yield w
    for c in (w.admin, w.officer, w.auditor, w.ipad):
        c.close()
    w.sim.close()


# ------------------------------------------------------------------ tests
def test_compliant_assigned_ipad_reads_document(world):
    r = world.ipad.get(f"/docs/{world.doc['id']}")
    assert r.status_code == 200, r.text
    assert r.content == world.content
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith('inline; filename="bao-cao.txt"')

    listing = world.ipad.get("/docs/")
    assert listing.status_code == 200 and listing.headers["cache-control"] == "no-store"
    assert "Báo cáo tháng 11" in listing.text and "Nguyễn Văn An" in listing.text
    assert 'lang="vi"' in listing.text
    assert 'lang="en"' in world.ipad.get("/docs/?lang=en").text
    js = world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()
    assert [d["id"] for d in js["documents"]] == [world.doc["id"]]
    assert js["leader"]["full_name"] == "Nguyễn Văn An" and js["verdict"]["state"] == "compliant"

    # Range: one range served, multi-range refused.
    r = world.ipad.get(f"/docs/{world.doc['id']}", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == world.content[:10]
    assert r.headers["content-range"] == f"bytes 0-9/{len(world.content)}"
    r = world.ipad.get(f"/docs/{world.doc['id']}", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == world.content[-5:]
    r = world.ipad.get(f"/docs/{world.doc['id']}", headers={"Range": "bytes=0-1,5-9"})
    assert r.status_code == 416
    r = world.ipad.get(f"/docs/{world.doc['id']}", headers={"Range": f"bytes={len(world.content)}-"})
    assert r.status_code == 416


def test_non_compliant_denied_on_very_next_request_even_in_another_process(world, tmp_path, database_url):
    """A second `ipad-mdm serve` process on the same instance and database: the access state it
    reads is precomputed in the transaction that changed the verdict, so it denies at once."""
    from tests.conftest import serve_process

    with serve_process(world.server.instance.settings.instance_dir, database_url) as url:
        ctx = ssl.create_default_context(cafile=world.server.ca_path)
        ctx.load_cert_chain(*pem_files(tmp_path, world.sim.identity, world.sim.key))
        with httpx.Client(verify=ctx, base_url=url, timeout=30) as ipad2:
            assert ipad2.get(f"/docs/{world.doc['id']}").status_code == 200
            assert ipad2.get(f"/docs/{world.doc['id']}").status_code == 200
            world.sim.state.passcode_present = False
            refresh(world.admin, world.sim)  # SecurityInfo through the first server process
            assert verdict_state(world.server, world.sim) == "non_compliant"
            r = ipad2.get(f"/docs/{world.doc['id']}")
            assert r.status_code == 403
            assert "không tuân thủ" in r.text and "Thiết bị chưa đặt mật mã mở khoá" in r.text  # the verdict's reason
            assert r.headers["cache-control"] == "no-store"
            js = ipad2.get("/docs/?lang=en", headers={"Accept": "application/json"}).json()
            assert js["error"] == "verdict_non_compliant" and js["problems"]
            r = world.ipad.get("/docs/?lang=en")
            assert r.status_code == 403 and "does not comply" in r.text and "No passcode is set" in r.text
            # Fixed: allowed again on the next request, in both processes.
            world.sim.state.passcode_present = True
            refresh(world.admin, world.sim)
            assert world.ipad.get(f"/docs/{world.doc['id']}").status_code == 200
            assert ipad2.get(f"/docs/{world.doc['id']}").status_code == 200


def test_grace_allowed_with_banner_until_deadline(world, monkeypatch):
    r = world.officer.put(f"/api/v1/policies/{world.policy_id}",
                          json={"name": "Cơ bản", "rules": [{"kind": "passcode_present"}], "grace_hours": 24,
                                "assign": {"all": True}, "actions": ["block_gateway"]})
    assert r.status_code == 200, r.text
    world.sim.state.passcode_present = False
    refresh(world.admin, world.sim)
    assert verdict_state(world.server, world.sim) == "grace"
    r = world.ipad.get("/docs/")
    assert r.status_code == 200 and "Cảnh báo" in r.text and "giờ Việt Nam" in r.text
    assert world.ipad.get(f"/docs/{world.doc['id']}").status_code == 200
    # The deadline passes; the scheduler has not run yet: the gateway denies by itself.
    later = utcnow() + 25 * H
    monkeypatch.setattr(clock, "now", lambda: later)
    r = world.ipad.get("/docs/", headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "grace_expired"


def test_revoked_certificate_denied(world):
    assert world.ipad.get("/docs/").status_code == 200
    with world.server.session() as s:
        row = s.scalar(select(IdentityCertificate).where(
            IdentityCertificate.sha256_fingerprint == world.sim.identity.fingerprint(hashes.SHA256()).hex()))
        revoke_identity(s, row, "keyCompromise")
    r = world.ipad.get("/docs/", headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "certificate_revoked"


def test_lost_mode_and_retired_checked_out_denied(world):
    with world.server.session() as s:
        s.scalar(select(Device).where(Device.udid == world.sim.udid)).lost_mode_enabled = True
    assert world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()["error"] == "lost_mode"
    with world.server.session() as s:
        s.scalar(select(Device).where(Device.udid == world.sim.udid)).lost_mode_enabled = False
    assert world.ipad.get("/docs/").status_code == 200
    world.sim.checkout()
    r = world.ipad.get("/docs/", headers={"Accept": "application/json"})
    # CheckOut revokes the identity as well; either reason denies.
    assert r.status_code == 403 and r.json()["error"] in ("device_checked_out", "certificate_revoked")


def test_certificate_from_another_ca_rejected(world, tmp_path):
    ca, ca_key = self_signed_ca("Rogue CA")
    cert, key = issue(ca, ca_key, world.sim.udid)
    ctx = ssl.create_default_context(cafile=world.server.ca_path)
    ctx.load_cert_chain(*pem_files(tmp_path, cert, key))
    with httpx.Client(verify=ctx, base_url=world.server.url, timeout=10) as rogue:
        with pytest.raises(httpx.HTTPError):  # the embedded TLS server refuses the handshake
            rogue.get("/docs/")
    with world.server.http() as anonymous:
        r = anonymous.get("/docs/", headers={"Accept": "application/json"})
        assert r.status_code == 401 and r.json()["error"] == "no_client_certificate"


def test_proxy_header_needs_secret_and_our_ca(tmp_path, database_url):
    from urllib.parse import quote

    srv = start_live_server(tmp_path, database_url, client_cert_header="X-Client-Cert", proxy_secret="bí-mật-proxy-1")
    try:
        ca, ca_key = self_signed_ca("Rogue CA")
        cert, _ = issue(ca, ca_key, "rogue")
        header = quote(cert.public_bytes(serialization.Encoding.PEM).decode())
        with srv.http() as c:
            r = c.get("/docs/", headers={"X-Client-Cert": header, "Accept": "application/json",
                                         "X-Proxy-Secret": "wrong"})
            assert r.status_code == 401 and r.json()["error"] == "untrusted_proxy"
            r = c.get("/docs/", headers={"X-Client-Cert": header, "Accept": "application/json",
                                         "X-Proxy-Secret": quote("bí-mật-proxy-1")})
            assert r.status_code in (401, 403)
        with srv.session() as s:
            rows = s.scalars(select(GatewayAuditEvent).order_by(GatewayAuditEvent.id)).all()
        assert rows[0].reason_code == "untrusted_proxy" and rows[0].decision == "deny"
    finally:
        srv.stop()


def test_proxy_header_with_secret_identifies_device(world, tmp_path, database_url):
    from urllib.parse import quote

    srv = start_live_server(tmp_path / "p", database_url, client_cert_header="X-Client-Cert", proxy_secret="s3cret")
    share_documents(world.server, srv)
    try:
        header = quote(world.sim.identity.public_bytes(serialization.Encoding.PEM).decode())
        with srv.http() as c:
            r = c.get(f"/docs/{world.doc['id']}", headers={"X-Client-Cert": header, "X-Proxy-Secret": "s3cret",
                                                          "X-Forwarded-For": "10.8.0.7"})
            assert r.status_code == 200 and r.content == world.content
            ca, ca_key = self_signed_ca("Rogue CA")
            cert, _ = issue(ca, ca_key, world.sim.udid)
            r = c.get("/docs/", headers={"X-Client-Cert": quote(cert.public_bytes(serialization.Encoding.PEM).decode()),
                                         "X-Proxy-Secret": "s3cret", "Accept": "application/json"})
            assert r.status_code == 403 and r.json()["error"] == "certificate_untrusted"
        with srv.session() as s:
            ips = [e.client_ip for e in s.scalars(select(GatewayAuditEvent).where(GatewayAuditEvent.decision == "allow"))]
        assert "10.8.0.7" in ips
    finally:
        srv.stop()


def test_secret_never_listed_or_served_and_confidential_by_role(world, tmp_path):
    secret = upload(world.officer, "mat.txt", b"noi dung mat\n", classification="secret", title="Tài liệu mật").json()
    conf = upload(world.officer, "han-che.txt", b"han che\n", classification="confidential", title="Hạn chế").json()
    ids = [d["id"] for d in world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()["documents"]]
    assert secret["id"] not in ids and conf["id"] in ids  # director sees confidential
    assert "Tài liệu mật" not in world.ipad.get("/docs/").text
    r_secret = world.ipad.get(f"/docs/{secret['id']}")
    r_guess = world.ipad.get(f"/docs/{secrets.token_urlsafe(16)}")
    assert r_secret.status_code == r_guess.status_code == 404
    assert r_secret.text == r_guess.text  # nothing tells "exists but hidden" from "unknown"
    # A deputy director may not see confidential documents.
    r = world.admin.patch(f"/api/v1/leaders/{world.leader['id']}", json={"role": "deputy_director"})
    assert r.status_code == 200, r.text
    ids = [d["id"] for d in world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()["documents"]]
    assert conf["id"] not in ids and world.doc["id"] in ids
    assert world.ipad.get(f"/docs/{conf['id']}").status_code == 404
    # Even a minister never gets a secret document.
    world.admin.patch(f"/api/v1/leaders/{world.leader['id']}", json={"role": "minister"})
    assert world.ipad.get(f"/docs/{secret['id']}").status_code == 404
    assert world.ipad.get(f"/docs/{conf['id']}").status_code == 200
    with world.server.session() as s:
        codes = [e.reason_code for e in s.scalars(select(GatewayAuditEvent).where(
            GatewayAuditEvent.document_public_id == secret["id"]))]
    assert codes and set(codes) == {"classification_secret"}

    # Reclassifying a readable document as secret takes effect on the very next request.
    from document_gateway.models import Document
    from document_gateway.service import GatewayError, set_classification

    assert world.ipad.get(f"/docs/{conf['id']}").status_code == 200
    with world.server.session() as s:
        doc = s.scalar(select(Document).where(Document.public_id == conf["id"]))
        with pytest.raises(GatewayError):
            set_classification(s, doc, "top-secret", by="test")
        set_classification(s, doc, "secret", by="test")
    assert world.ipad.get(f"/docs/{conf['id']}").status_code == 404


def test_unit_scope(world):
    other = upload(world.officer, "vhc.txt", b"cua vu hanh chinh\n", unit="VHC", title="Của Vụ Hành chính").json()
    shared = upload(world.officer, "chung.txt", b"dung chung\n", unit="VHC", shared_units="TTTH", title="Dùng chung").json()
    ids = [d["id"] for d in world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()["documents"]]
    assert other["id"] not in ids and shared["id"] in ids
    assert world.ipad.get(f"/docs/{other['id']}").status_code == 404
    assert world.ipad.get(f"/docs/{shared['id']}").status_code == 200


def test_unassigned_device_denied(world, tmp_path):
    sim2 = enroll(world.server)
    refresh(world.admin, sim2)
    with ipad_client(world.server, tmp_path, sim2) as ipad2:
        r = ipad2.get("/docs/", headers={"Accept": "application/json"})
        assert r.status_code == 403 and r.json()["error"] == "not_assigned"
        assert "bàn giao" in ipad2.get("/docs/").text
    # Returning the first iPad denies it at once too.
    assert world.admin.delete(f"/api/v1/devices/{world.sim.udid}/assignment").status_code == 200
    assert world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()["error"] == "not_assigned"
    # And a deactivated leader's iPad.
    world.admin.put(f"/api/v1/devices/{world.sim.udid}/assignment", json={"leader_id": world.leader["id"]})
    assert world.ipad.get("/docs/").status_code == 200
    world.admin.patch(f"/api/v1/leaders/{world.leader['id']}", json={"active": False})
    assert world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()["error"] == "leader_inactive"
    sim2.close()


@pytest.mark.parametrize("path", [
    "/docs/..%2F..%2F..%2Fetc%2Fpasswd",
    "/docs/%2e%2e/%2e%2e/ipad-mdm.sqlite3",
    "/docs/..%2Finstance%2Fsecrets%2Fca.key",
    "/docs/AAAAAAAAAAAAAAAAAAAAAA",
    "/docs/1",
])
def test_traversal_and_guessed_ids_are_404_and_audited(world, path):
    r = world.ipad.get(path)
    assert r.status_code == 404 and r.headers["cache-control"] == "no-store"
    assert "root:" not in r.text and "PRIVATE KEY" not in r.text
    with world.server.session() as s:
        last = s.scalars(select(GatewayAuditEvent).order_by(GatewayAuditEvent.id.desc())).first()
    assert last.reason_code == "document_unknown" and last.decision == "deny" and last.http_status == 404


def test_audit_chain_verifies_and_detects_tampering(world, database_url):
    world.ipad.get("/docs/")
    world.ipad.get(f"/docs/{world.doc['id']}")
    world.ipad.get("/docs/nope-nope-nope-nope-nope")
    with world.server.session() as s:
        status = audit.full_check(s, world.server.instance)
        assert status.ok and status.first_bad_id is None and status.checked >= 3
        rows = s.scalars(select(GatewayAuditEvent).order_by(GatewayAuditEvent.id)).all()
    assert [r.id for r in rows] == list(range(1, len(rows) + 1))
    allow = next(r for r in rows if r.decision == "allow" and r.action == "view")
    assert allow.device_udid == world.sim.udid and allow.leader_id == world.leader["id"]
    assert allow.document_public_id == world.doc["id"] and allow.classification == "internal"
    assert allow.client_ip == "127.0.0.1" and allow.reason_code == "allowed"

    # The API: filters and paging.
    r = world.auditor.get("/api/v1/audit/gateway", params={"device": world.sim.udid, "decision": "allow", "limit": 1})
    assert r.status_code == 200 and r.json()["total"] >= 2 and len(r.json()["events"]) == 1
    assert world.auditor.get("/api/v1/audit/gateway/verify").json()["ok"] is True
    assert world.admin.get("/api/v1/audit/gateway").status_code == 403  # it_admin lacks audit.read

    # The CLI the main `ipad-mdm` mounts.
    env = {"DATABASE_URL": database_url}
    res = CliRunner().invoke(gateway_cli, ["--instance", str(world.server.instance.settings.instance_dir),
                                           "audit-verify", "--json"], env=env)
    assert res.exit_code == 0, res.output

    # The table refuses changes (the database's own trigger says so); someone able to drop the
    # trigger still gets caught.
    target = rows[1].id
    with world.server.instance.database.engine.begin() as conn:
        for statement in ("UPDATE gateway_audit_events SET decision = 'allow' WHERE id = :i",
                          "DELETE FROM gateway_audit_events WHERE id = :i"):
            with pytest.raises(DBAPIError, match="gateway_audit_events is append-only"):
                with conn.begin_nested():
                    conn.execute(text(statement), {"i": target})
    with world.server.instance.database.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE gateway_audit_events DISABLE TRIGGER gateway_audit_append_only"))
        else:
            conn.execute(text("DROP TRIGGER gateway_audit_no_update"))
        conn.execute(text("UPDATE gateway_audit_events SET reason_en = 'nothing to see' WHERE id = :i"), {"i": target})
    with world.server.session() as s:
        status = audit.full_check(s, world.server.instance)
        assert (status.ok, status.first_bad_id, status.checked, status.problem) == (False, target, target - 1,
                                                                                    "row_altered")
    res = CliRunner().invoke(gateway_cli, ["--instance", str(world.server.instance.settings.instance_dir),
                                           "audit-verify"], env=env)
    assert res.exit_code == 2 and f"row {target}" in res.output


def test_audit_chain_concurrent_appends(world):
    import concurrent.futures

    def hit(_):
        return world.ipad.get("/docs/").status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(hit, range(40))) == {200}
    with world.server.session() as s:
        status = audit.full_check(s, world.server.instance)
    assert status.ok and status.checked >= 40


def test_signed_pdf_valid_tampered_invalid_unsigned(world, tmp_path):
    signing_ca, signing_ca_key = self_signed_ca("Ban Cơ yếu Chính phủ (thử nghiệm)")
    signer_cert, signer_key = issue(signing_ca, signing_ca_key, "Nguyễn Văn An", signer=True)
    trust = world.server.instance.settings.instance_dir / "document-trust"
    trust.mkdir()
    (trust / "bcy.pem").write_bytes(signing_ca.public_bytes(serialization.Encoding.PEM))

    plain = make_pdf("Phieu trinh so 123 - noi dung goc")
    signed = sign_pdf(plain, tmp_path, signer_cert, signer_key, signing_ca)
    assert b"noi dung goc" in signed
    tampered = signed.replace(b"noi dung goc", b"noi dung SUA")

    good = upload(world.officer, "phieu-trinh.pdf", signed, title="Phiếu trình 123")
    assert good.status_code == 201, good.text
    sig = good.json()["signature"]
    assert sig["status"] == "valid", sig
    assert "Nguyễn Văn An" in sig["signer"] and sig["signed_at"]
    bad = upload(world.officer, "phieu-trinh-sua.pdf", tampered, title="Phiếu trình bị sửa").json()
    assert bad["signature"]["status"] == "invalid"
    assert bad["signature"]["details"][0]["intact"] is False
    unsigned = upload(world.officer, "khong-ky.pdf", plain, title="Không ký").json()
    assert unsigned["signature"]["status"] == "unsigned"

    # Listings show the status.
    listing = world.officer.get("/api/v1/documents").json()["documents"]
    assert {d["id"]: d["signature"]["status"] for d in listing}[good.json()["id"]] == "valid"
    page = world.ipad.get("/docs/").text
    assert "Hợp lệ" in page and "Không hợp lệ" in page and "Không có chữ ký" in page
    r = world.ipad.get(f"/docs/{good.json()['id']}")
    assert r.status_code == 200 and r.content == signed and r.headers["content-type"] == "application/pdf"


def test_upload_checks_content_size_and_permission(world):
    cases = [
        ("trang.pdf", b"<html><script>alert(1)</script></html>", 415),   # not a PDF at all
        ("vanban.docx", make_pdf("x"), 415),                             # PDF renamed .docx
        ("ghi-chu.txt", b"<!DOCTYPE html><html></html>", 415),          # HTML as text
        ("anh.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415),
        ("nhi-phan.txt", b"\x00\x01\x02binary", 415),
        ("lon.txt", b"a" * 300_001, 413),
    ]
    for name, content, status in cases:
        r = upload(world.officer, name, content)
        assert r.status_code == status, (name, r.text)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    assert upload(world.officer, "so-do.png", png).json()["mime_type"] == "image/png"
    assert upload(world.officer, "x.txt", b"x", classification="top").status_code == 400
    assert upload(world.officer, "x.txt", b"x", unit="NOPE").status_code == 400
    assert upload(world.admin, "x.txt", b"x").status_code == 403  # it_admin lacks documents.admin
    # Stored content-addressed, 0600, nothing named after the upload.
    root = world.server.instance.settings.instance_dir / "documents"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    assert all(len(p.name) == 64 for p in files if p.parent.name != "tmp")


def test_leader_and_assignment_api_validation(world):
    assert world.admin.post("/api/v1/leaders", json={"full_name": "X", "unit": "TTTH", "role": "king"}).status_code == 400
    assert world.admin.post("/api/v1/leaders", json={"full_name": "", "unit": "TTTH", "role": "director"}).status_code == 400
    assert world.officer.post("/api/v1/leaders", json={"full_name": "X", "unit": "TTTH",
                                                       "role": "director"}).status_code == 403
    leaders = world.admin.get("/api/v1/leaders").json()["leaders"]
    assert leaders[0]["devices"] == [world.sim.udid]
    assert world.admin.put("/api/v1/devices/NOPE/assignment", json={"leader_id": 1}).status_code == 404
    assert world.admin.put(f"/api/v1/devices/{world.sim.udid}/assignment", json={"leader_id": 999}).status_code == 404
    # Re-assigning to another leader closes the previous assignment.
    other = world.admin.post("/api/v1/leaders", json={"full_name": "Trần Thị Bình", "unit": "VHC",
                                                       "role": "vice_minister"}).json()
    r = world.admin.put(f"/api/v1/devices/{world.sim.udid}/assignment", json={"leader_id": other["id"]})
    assert r.status_code == 200 and r.json()["leader_id"] == other["id"]
    js = world.ipad.get("/docs/", headers={"Accept": "application/json"}).json()
    assert js["leader"]["full_name"] == "Trần Thị Bình"


def test_an_allowed_read_on_postgresql_is_the_fast_path_with_the_full_paths_audit_row(world, database_url, monkeypatch):
    """On PostgreSQL an allowed read is answered by docs_fast (no SQLAlchemy statement at all); its
    audit row holds exactly what the full path writes for the same read, the chain verifies, and
    what it does not allow (a range it cannot serve, a refusal) is answered by the full path."""
    from sqlalchemy import event

    from document_gateway import docs_fast

    if not database_url.startswith("postgresql"):
        pytest.skip("the fast path is PostgreSQL's; SQLite answers every read by the full path")
    server = world.server
    statements: list[str] = []

    def count(conn, cursor, statement, *a):
        statements.append(statement)

    url = f"/docs/{world.doc['id']}"
    event.listen(server.instance.database.engine, "before_cursor_execute", count)
    try:
        fast = world.ipad.get(url, headers={"Range": "bytes=0-9"})
        assert fast.status_code == 206 and fast.content == world.content[:10]
        assert statements == []  # no SQLAlchemy statement: the fast path answered
        with monkeypatch.context() as m:
            m.setattr(docs_fast, "open_document", lambda *a, **kw: None)
            full = world.ipad.get(url, headers={"Range": "bytes=0-9"})
        assert full.status_code == 206 and full.content == fast.content
        assert statements  # the full path went through SQLAlchemy
        assert {k: v for k, v in fast.headers.items() if k != "date"} == \
               {k: v for k, v in full.headers.items() if k != "date"}
        statements.clear()
        bad = world.ipad.get(url, headers={"Range": "bytes=0-1,5-9"})
        assert bad.status_code == 416 and statements  # declined by the fast path, answered in full
    finally:
        event.remove(server.instance.database.engine, "before_cursor_execute", count)

    with server.session() as s:
        rows = list(s.scalars(select(GatewayAuditEvent).order_by(GatewayAuditEvent.id.desc()).limit(3)))[::-1]
        assert [r.http_status for r in rows] == [206, 206, 416]
        ignored = {"id", "at", "prev_hash", "row_hash"}
        fast_row, full_row = ({c.name: getattr(r, c.name) for c in GatewayAuditEvent.__table__.columns
                               if c.name not in ignored} for r in rows[:2])
        assert fast_row == full_row and fast_row["decision"] == "allow" and fast_row["document_id"] is not None
        assert rows[1].id == rows[0].id + 1 and rows[1].prev_hash == rows[0].row_hash
        assert audit.verify_chain(s, server.instance.audit_key).ok
