"""The office's own document system behind Debian's nginx, with this server deciding every request.

nginx runs the shipped template (deploy/nginx/ipad-mdm-edge.conf.template, rendered as
`ipad-mdm gateway nginx-config` renders it): mTLS against the project CA, auth_request to
/edge/decide, a stand-in document system that records every request it receives. Simulated iPads
open documents with their real SCEP identity certificates.
"""
from __future__ import annotations

import datetime as dt
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from document_gateway import audit
from document_gateway.models import GatewayAuditEvent
from mdm.identity import revoke_identity
from mdm.models import IdentityCertificate
from tests.conftest import retire_baseline_policy, start_live_server
from tests.edge_stack import Upstream, start_nginx
from tests.test_gateway import api, enroll, make_unit, refresh

SECRET = "edge-proxy-secret-0123456789"


@pytest.fixture
def edge(tmp_path, database_url):
    srv = start_live_server(tmp_path, database_url, client_cert_header="X-Client-Cert", proxy_secret=SECRET)
    upstream = Upstream()
    try:
        with start_nginx(tmp_path / "nginx", srv, upstream.url, proxy_secret=SECRET) as url:
            srv.edge_url, srv.upstream = url, upstream
            yield srv
    finally:
        upstream.close()
        srv.stop()


def _office(srv):
    """A unit, a director with a compliant iPad, a second iPad made non-compliant."""
    admin, officer = api(srv, "it_admin"), api(srv, "security_officer")
    make_unit(srv, "TTTH", "Trung tâm Tin học")
    retire_baseline_policy(officer)
    r = officer.post("/api/v1/policies", json={"name": "Cơ bản", "rules": [{"kind": "passcode_present"}],
                                               "grace_hours": 0, "assign": {"all": True},
                                               "actions": ["block_gateway"]})
    assert r.status_code == 201, r.text
    leader = admin.post("/api/v1/leaders", json={"full_name": "Nguyễn Văn An", "title": "Giám đốc Trung tâm Tin học",
                                                 "unit": "TTTH", "role": "director"}).json()
    ipads = []
    for _ in range(2):
        sim = enroll(srv)
        refresh(admin, sim)
        assert admin.put(f"/api/v1/devices/{sim.udid}/assignment", json={"leader_id": leader["id"]}).status_code == 200
        ipads.append(sim)
    return admin, officer, leader, ipads


def _refused_without_upstream(r, srv, code, path_part):
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert not [p for p in srv.upstream.documents_served() if path_part in p], srv.upstream.documents_served()
    return r


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_document_system_behind_nginx(edge, tmp_path):
    srv = edge
    admin, officer, leader, (good, bad) = _office(srv)
    ca = srv.ca_path
    # Classification at the edge: secret paths, a confidential area, and the upstream's own header.
    for rule in ({"name": "Tài liệu mật", "pattern": "/mat/**", "classification": "secret"},
                 {"name": "Hồ sơ", "pattern": "/ho-so/**", "classification": "from_upstream"},
                 {"name": "Hạn chế", "pattern": "/han-che/**", "classification": "confidential"}):
        r = officer.post("/api/v1/edge/rules", json=rule)
        assert r.status_code == 201, r.text
    assert officer.put("/api/v1/edge/settings", json={"probe_base_url": srv.upstream.url}).status_code == 200
    srv.upstream.labels.update({"/ho-so/7": "Tối mật", "/ho-so/8": "internal"})

    app = good.document_app(srv.edge_url, cafile=ca)
    # Compliant: the document system answers, told who asks.
    r = app.get("/van-ban/bao-cao-thang-11.pdf")
    assert r.status_code == 200 and r.text == "document system: /van-ban/bao-cao-thang-11.pdf"
    seen = srv.upstream.seen("/van-ban/bao-cao-thang-11.pdf")[-1]["headers"]
    assert seen["x-mdm-device-udid"] == good.udid
    assert unquote(seen["x-mdm-leader-name"]) == "Nguyễn Văn An"
    assert seen["x-mdm-leader-role"] == "director" and seen["x-mdm-unit"] == "TTTH"
    assert seen["x-mdm-verdict"] == "compliant" and seen["x-mdm-classification"] == "internal"
    assert int(seen["x-mdm-audit-id"]) > 0
    # Nothing of the proxy's own secrets or the raw certificate reaches the document system.
    assert not seen.get("x-proxy-secret") and not seen.get("x-client-cert")
    # A header the iPad sends to pose as someone else is overwritten by the decision's own.
    app.get("/van-ban/gia-mao", headers={"X-MDM-Leader-Role": "minister", "X-MDM-Device-UDID": "someone-else"})
    forged = srv.upstream.seen("/van-ban/gia-mao")[-1]["headers"]
    assert forged["x-mdm-leader-role"] == "director" and forged["x-mdm-device-udid"] == good.udid
    assert app.get("/han-che/ke-hoach").status_code == 200  # a director may open confidential
    # A rule added while every process is warm applies to the very next request.
    assert app.get("/van-ban/mat-moi/1.pdf").status_code == 200
    assert officer.post("/api/v1/edge/rules", json={"name": "Mật mới", "pattern": "/van-ban/mat-moi/**",
                                                    "classification": "secret", "position": 1}).status_code == 201
    _refused_without_upstream(app.get("/van-ban/mat-moi/2.pdf"), srv, "classification_secret", "mat-moi/2")

    # Secret paths: refused to a compliant iPad, however the path is spelt; never reach upstream.
    for path in ("/mat/quyet-dinh-1.pdf", "/MAT/quyet-dinh-1.pdf", "/van-ban/../mat/quyet-dinh-1.pdf",
                 "/mat%2Fquyet-dinh-1.pdf", "/mat;v=1/quyet-dinh-1.pdf"):
        r = app.get(path)
        _refused_without_upstream(r, srv, "classification_secret", "quyet-dinh-1")
        assert "bí mật nhà nước" in r.text and 'lang="vi"' in r.text, r.text[:400]
    r = app.get("/mat/quyet-dinh-1.pdf?lang=en")
    assert r.status_code == 403 and "State-secret" in r.text and 'lang="en"' in r.text
    # The document system's own classification header: "Tối mật" → refused; internal → served.
    r = app.get("/ho-so/7")
    _refused_without_upstream(r, srv, "classification_secret", "/ho-so/7")
    assert srv.upstream.seen("/ho-so/7", "HEAD")  # it was asked, with HEAD
    assert app.get("/ho-so/8").status_code == 200

    # Non-compliant: refused with the verdict's reason, upstream never asked.
    bad.state.passcode_present = False
    refresh(admin, bad)
    bad_app = bad.document_app(srv.edge_url, cafile=ca)
    r = bad_app.get("/van-ban/chi-thi.pdf")
    _refused_without_upstream(r, srv, "verdict_non_compliant", "chi-thi")
    assert "không tuân thủ chính sách bảo mật" in r.text
    r = bad_app.get("/van-ban/chi-thi.pdf", headers={"Accept": "application/json"})
    assert r.json()["error"] == "verdict_non_compliant"

    # A certificate of another CA: nginx refuses the handshake's result (400), upstream untouched.
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipad-gia-mao")])
    from cryptography.hazmat.primitives import hashes

    forged_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(other_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                   .not_valid_after(now + dt.timedelta(days=1)).sign(other_key, hashes.SHA256()))
    before = len(srv.upstream.requests)
    stranger = type(good)(srv.url)
    stranger.identity, stranger.key = forged_cert, other_key
    with stranger.document_app(srv.edge_url, cafile=ca) as c:
        assert c.get("/van-ban/bao-cao.pdf").status_code == 400
    # Unknown: a client certificate from our CA that is no device identity.
    unknown = type(good)(srv.url)
    unknown.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unknown.identity = srv.instance.ca.issue_client(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "khong-phai-ipad")]), unknown.key.public_key(), 1)
    with unknown.document_app(srv.edge_url, cafile=ca) as c:
        r = c.get("/van-ban/bao-cao.pdf")
        assert r.status_code == 403 and "không phải chứng thư định danh" in r.text
    assert len(srv.upstream.requests) == before

    # Revoked: the next request is refused.
    from mdm.models import Device

    with srv.session() as s:
        device = s.scalar(select(Device).where(Device.udid == good.udid))
        ident = s.scalar(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id,
                                                           IdentityCertificate.revoked_at.is_(None)))
        revoke_identity(s, ident, reason="keyCompromise")
    r = app.get("/van-ban/bao-cao-thang-12.pdf")
    _refused_without_upstream(r, srv, "certificate_revoked", "thang-12")
    assert "thu hồi" in r.text

    # Every decision is in the hash chain with the original request; the chain verifies.
    with srv.session() as s:
        rows = s.scalars(select(GatewayAuditEvent).where(GatewayAuditEvent.action == "edge")
                         .order_by(GatewayAuditEvent.id)).all()
        by_uri = {(r.request_uri, r.reason_code) for r in rows}
        assert ("/van-ban/bao-cao-thang-11.pdf", "allowed") in by_uri
        assert ("/mat%2Fquyet-dinh-1.pdf", "classification_secret") in by_uri
        assert ("/van-ban/chi-thi.pdf", "verdict_non_compliant") in by_uri
        assert ("/van-ban/bao-cao.pdf", "certificate_unknown") in by_uri
        assert ("/van-ban/bao-cao-thang-12.pdf", "certificate_revoked") in by_uri
        assert all(r.request_method == "GET" for r in rows)
        assert audit.full_check(s, srv.instance).ok
    app.close()
    bad_app.close()
    for c in (admin, officer):
        c.close()
