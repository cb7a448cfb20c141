"""/edge/decide called as a proxy calls it (real TLS, the real decision, the real audit chain):
bad input, the Envoy and Traefik forms of the contract, grace, role limits, the rules API."""
from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from document_gateway import audit
from document_gateway.edge_rules import canonical_path
from document_gateway.models import GatewayAuditEvent
from ipad_mdm.cli import main as cli_main
from tests.conftest import start_live_server
from tests.test_edge_nginx import SECRET, _office
from tests.test_gateway import api, refresh, self_signed_ca, issue


@pytest.fixture
def decider(tmp_path, database_url):
    srv = start_live_server(tmp_path, database_url, client_cert_header="X-Client-Cert", proxy_secret=SECRET)
    try:
        yield srv
    finally:
        srv.stop()


def _pem(cert: x509.Certificate) -> str:
    return quote(cert.public_bytes(serialization.Encoding.PEM).decode())


def ask(http, cert_header: str | None, uri: str | None = "/van-ban/a.pdf", secret: str | None = SECRET, **headers):
    h = {"Accept": "application/json"}
    if secret is not None:
        h["X-Proxy-Secret"] = secret
    if cert_header is not None:
        h["X-Client-Cert"] = cert_header
    if uri is not None:
        h["X-Original-URI"] = uri
    h.update(headers)
    return http.get("/edge/decide", headers=h)


def test_edge_decision_contract_and_bad_input(decider):
    srv = decider
    admin, officer, leader, (good, bad) = _office(srv)
    http = srv.http()
    cert = _pem(good.identity)

    r = ask(http, cert, "/van-ban/a.pdf", **{"X-Original-Method": "POST", "X-Forwarded-For": "10.8.0.5"})
    assert r.status_code == 200 and r.text == ""
    assert r.headers["x-mdm-device-udid"] == good.udid and r.headers["x-mdm-decision"] == "allow"
    assert unquote(r.headers["x-mdm-leader-name"]) == "Nguyễn Văn An" and r.headers["x-mdm-unit"] == "TTTH"
    assert "x-mdm-warning" not in r.headers and r.headers["cache-control"] == "no-store"

    # Traefik ForwardAuth and Envoy ext_authz (HTTP mode) forms of the same question.
    r = http.get("/edge/decide", headers={"X-Proxy-Secret": SECRET, "X-Client-Cert": cert,
                                          "X-Forwarded-Uri": "/mat/x", "X-Forwarded-Method": "GET"})
    assert r.status_code == 200  # no rule yet: the default classification (internal)
    assert officer.post("/api/v1/edge/rules", json={"name": "Mật", "pattern": "/mat/**",
                                                    "classification": "secret"}).status_code == 201
    r = http.get("/edge/decide", headers={"X-Proxy-Secret": SECRET, "X-Client-Cert": cert,
                                          "X-Forwarded-Uri": "/mat/x", "Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "classification_secret"  # the new rule applies at once
    r = http.request("PUT", "/edge/decide/mat/x", headers={"X-Proxy-Secret": SECRET, "X-Client-Cert": cert})
    assert r.status_code == 403 and r.headers["x-mdm-reason"] == "classification_secret"
    assert "bí mật nhà nước" in r.text  # Envoy passes the body on: the Vietnamese page
    assert http.delete("/edge/decide/van-ban/b", headers={"X-Proxy-Secret": SECRET,
                                                          "X-Client-Cert": cert}).status_code == 200

    # Bad input: a clear 401/403 with its reason code, audited, never a 500.
    other_ca, other_key = self_signed_ca("CA khác")
    foreign, _ = issue(other_ca, other_key, "ipad-la")
    cases = [
        (ask(http, cert, secret=None), 401, "untrusted_proxy"),
        (ask(http, cert, secret="wrong-secret"), 401, "untrusted_proxy"),
        (ask(http, None), 401, "no_client_certificate"),
        (ask(http, "-----BEGIN%20CERTIFICATE-----%0Agarbage"), 401, "certificate_invalid"),
        (ask(http, "%ZZ%00"), 401, "certificate_invalid"),
        (ask(http, _pem(foreign)), 403, "certificate_untrusted"),
        (ask(http, cert, "/" + "a" * 3000), 403, "uri_too_long"),
        (ask(http, cert, None), 403, "request_malformed"),
        (ask(http, cert, "no-slash"), 403, "request_malformed"),
        (ask(http, cert, "/bad%FFutf8"), 403, "request_malformed"),
        (ask(http, cert, "/x", **{"X-Original-Method": "G E T"}), 403, "request_malformed"),
        (ask(http, cert, **{"X-Client-Verify": "FAILED:certificate has expired"}), 401, "certificate_invalid"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, (code, r.status_code, r.text[:200])
        assert r.headers["x-mdm-reason"] == code and r.json()["error"] == code
        assert "x-mdm-device-udid" not in r.headers
    with srv.session() as s:
        rows = s.scalars(select(GatewayAuditEvent).where(GatewayAuditEvent.action == "edge")).all()
        codes = [row.reason_code for row in rows]
        for _, _, code in cases:
            assert code in codes
        long_row = next(row for row in rows if row.reason_code == "uri_too_long")
        assert long_row.request_uri is None  # refused before it was read
        assert next(row for row in rows if row.request_method == "POST").client_ip == "10.8.0.5"
        assert audit.full_check(s, srv.instance).ok

    # The reason page nginx shows renders only known codes, in either language.
    assert "thu hồi" in http.get("/edge/denied?code=certificate_revoked").text
    r = http.get("/edge/denied?code=<script>&lang=en")
    assert r.status_code == 403 and "<script>" not in r.text and "temporary problem" in r.text

    # A deputy director may not open confidential; grace passes with a warning.
    assert officer.post("/api/v1/edge/rules", json={"name": "Hạn chế", "pattern": "/han-che/",
                                                    "pattern_kind": "prefix",
                                                    "classification": "confidential"}).status_code == 201
    deputy = admin.post("/api/v1/leaders", json={"full_name": "Trần Thị Bình", "title": "Phó Giám đốc",
                                                 "unit": "TTTH", "role": "deputy_director"}).json()
    assert admin.put(f"/api/v1/devices/{good.udid}/assignment", json={"leader_id": deputy["id"]}).status_code == 200
    r = ask(http, cert, "/han-che/ke-hoach")
    assert r.status_code == 403 and r.json()["error"] == "classification_not_allowed"
    assert ask(http, cert, "/van-ban/a.pdf").status_code == 200
    policy = officer.get("/api/v1/policies").json()["policies"][0]
    r = officer.put(f"/api/v1/policies/{policy['id']}", json={"name": policy["name"], "grace_hours": 24,
                                                              "rules": [{"kind": "passcode_present"}],
                                                              "assign": {"all": True}, "actions": ["block_gateway"]})
    assert r.status_code == 200, r.text
    good.state.passcode_present = False
    refresh(admin, good)
    r = ask(http, cert, "/van-ban/a.pdf", **{"Accept-Language": "en"})
    assert r.status_code == 200 and r.headers["x-mdm-verdict"] == "grace"
    assert "Warning" in unquote(r.headers["x-mdm-warning"]) and r.headers["x-mdm-grace-until"]
    assert "Cảnh báo" in unquote(ask(http, cert, "/van-ban/a.pdf").headers["x-mdm-warning"])

    # Security officers read the edge's decisions in the console audit page, in words.
    from console.accounts import create_user
    from tests.test_console_support import PASSWORD, client_for

    with srv.session() as s:
        create_user(s, "security", PASSWORD, "security_officer", full_name="Phạm An Ninh")
    page = client_for(srv, "security").get("/console/audit").text
    assert "Truy cập hệ thống văn bản" in page and "GET /van-ban/a.pdf" in page
    assert "Địa chỉ tài liệu quá dài" in page.split('name="reason"')[1].split("</select>")[0]
    for c in (http, admin, officer):
        c.close()


def test_edge_rules_api_and_cli(decider, tmp_path):
    srv = decider
    officer, admin = api(srv, "security_officer"), api(srv, "it_admin")
    bad = [{}, {"name": "x"}, {"name": "x", "pattern": "mat/**", "classification": "secret"},
           {"name": "x", "pattern": "(", "pattern_kind": "regex", "classification": "secret"},
           {"name": "x", "pattern": "/a", "classification": "top"},
           {"name": "x", "pattern": "/a", "classification": "secret", "methods": ["FETCH"]},
           {"name": "x", "pattern": "/a", "classification": "secret", "position": -1},
           {"name": "x", "pattern": "/" + "a" * 2000, "classification": "secret"}]
    for body in bad:
        r = officer.post("/api/v1/edge/rules", json=body)
        assert r.status_code == 400 and r.json()["error"] == "invalid_rule", (body, r.text)
    assert officer.post("/api/v1/edge/rules", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert admin.post("/api/v1/edge/rules", json={"name": "x", "pattern": "/a", "classification": "public"}).status_code == 403
    assert officer.put("/api/v1/edge/settings", json={"default_classification": "secret"}).status_code == 200
    assert officer.put("/api/v1/edge/settings", json={"probe_base_url": "ftp://x"}).status_code == 400
    r = officer.post("/api/v1/edge/rules", json={"name": "Công khai", "pattern": "/cong-khai/*.pdf",
                                                 "classification": "public", "methods": ["GET", "HEAD"]})
    assert r.status_code == 201
    rule_id = r.json()["id"]
    c = officer.get("/api/v1/edge/classify", params={"uri": "/Cong-Khai/%61.pdf"}).json()
    assert c["classification"] == "public" and c["rule"] == rule_id
    c = officer.get("/api/v1/edge/classify", params={"uri": "/cong-khai/a/b.pdf"}).json()
    assert c["classification"] == "secret" and c["refused_to_every_ipad"] is True  # the default now
    assert officer.get("/api/v1/edge/classify", params={"uri": "x"}).status_code == 400
    assert officer.delete("/api/v1/edge/rules/999999").status_code == 404
    assert officer.delete(f"/api/v1/edge/rules/{rule_id}").status_code == 200

    env = {"DATABASE_URL": srv.instance.settings.database_url}
    runner = CliRunner()
    inst = str(srv.instance.settings.instance_dir)
    r = runner.invoke(cli_main, ["--instance", inst, "gateway", "edge-rule", "add", "--name", "Mật", "--pattern",
                                 "/mat/**", "--classification", "secret"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_main, ["--instance", inst, "gateway", "edge-rule", "list", "--json"], env=env)
    assert r.exit_code == 0 and '"pattern": "/mat/**"' in r.output
    r = runner.invoke(cli_main, ["--instance", inst, "gateway", "edge-rule", "add", "--name", "x", "--pattern", "a",
                                 "--classification", "secret"], env=env)
    assert r.exit_code == 2 and "starts with /" in r.output
    for c in (officer, admin):
        c.close()


@pytest.mark.parametrize("uri, expected", [
    ("/a/b", "/a/b"), ("/A/./B/", "/a/b/"), ("/a/../../etc", "/etc"), ("/a%2f%2E%2E%2fb", "/b"),
    ("//a///b?x=/mat", "/a/b"), ("/a;jsessionid=1/b", "/a/b"), ("/a\\b", "/a/b"), ("/%252e%252e/x", "/x"),
])
def test_canonical_path(uri, expected):
    assert canonical_path(uri) == expected


def test_readme_edge_block_runs_as_written(decider, tmp_path):
    """The README's nginx/webhook block, as one shell script, on the server's own instance; the
    nginx configuration it writes passes `nginx -t`."""
    import os
    import re
    import stat
    import subprocess
    import sys
    from pathlib import Path

    from tests.edge_stack import NGINX

    root = Path(__file__).resolve().parent.parent
    block = re.search(r"<!-- cli-edge -->\n```sh\n(.*?)\n```", (root / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README lost its edge block"
    cert, key = decider.instance.ca.issue_server(["vanban.vpcp.gov.vn"])
    (tmp_path / "vanban.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "vanban.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                                            serialization.NoEncryption()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAD_MDM_") and k != "DATABASE_URL"}
    env.update(IPAD_MDM_INSTANCE=str(decider.instance.settings.instance_dir),
               DATABASE_URL=decider.instance.settings.database_url)
    script = "set -euo pipefail\n" + block.group(1).replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    assert "/mat/**" in proc.stdout and "from_upstream" in proc.stdout and "van-ban" in proc.stdout
    secret = (tmp_path / "webhook.secret").read_text().strip()
    assert secret not in proc.stdout + proc.stderr
    conf = tmp_path / "ipad-mdm-edge.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    assert "auth_request /_ipad_mdm_decide;" in text and "ssl_verify_client on;" in text and "{{" not in text
    assert str(decider.instance.settings.ca_dir / "ca.pem") in text
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\n"
                                         f"events {{}}\nhttp {{ include {conf}; }}\n")
    check = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_fast_allow_is_audited_and_marked_so_gunicorn_writes_no_access_line(decider):
    """On PostgreSQL a compliant iPad's decision is answered in front of Flask (edge_fast.EdgeWSGI): it
    leaves its audit row and marks the request audited (ipad_mdm.gunicorn_logging skips its access line);
    a refusal goes on to the full path and is not marked."""
    from document_gateway.edge_fast import EdgeWSGI
    from ipad_mdm.gunicorn_logging import AUDITED

    srv = decider
    admin, _officer, _leader, (good, bad) = _office(srv)
    bad.state.passcode_present = False
    refresh(admin, bad)
    edge_layer = srv.app.wsgi_app
    while not isinstance(edge_layer, EdgeWSGI):
        edge_layer = edge_layer.app

    def decide(sim):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/edge/decide", "REMOTE_ADDR": "127.0.0.1",
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.url_scheme": "https", "wsgi.input": __import__("io").BytesIO(), "HTTP_HOST": "127.0.0.1",
                   "HTTP_X_PROXY_SECRET": SECRET, "HTTP_X_CLIENT_CERT": _pem(sim.identity),
                   "HTTP_X_ORIGINAL_URI": "/van-ban/quyet-dinh.pdf", "HTTP_X_ORIGINAL_METHOD": "GET"}
        status = []
        b"".join(edge_layer(environ, lambda s, h, e=None: status.append(s)))
        return status[0], environ

    def audit_rows():
        with srv.session() as s:
            return list(s.scalars(select(GatewayAuditEvent.decision).where(GatewayAuditEvent.action == "edge")))

    assert decide(good)[0] == "200 OK"  # the full path loads this process's copy of the edge rules
    before = audit_rows()
    status, environ = decide(good)
    assert status == "200 OK" and environ.get(AUDITED) is True
    assert audit_rows() == before + ["allow"]
    status, environ = decide(bad)
    assert status.startswith("403") and AUDITED not in environ
    assert audit_rows() == before + ["allow", "deny"]
