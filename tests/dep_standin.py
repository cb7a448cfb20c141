"""A local HTTPS stand-in for Apple's device-enrollment API (mdmenrollment.apple.com), for tests.

Like the APNs stand-in, it checks what Apple checks and answers what Apple answers:
  GET    /session            OAuth 1.0a (HMAC-SHA1) over the server token's four credentials;
                             answers {"auth_session_token"}; a session lasts `session_calls` calls,
                             then 401 (the client must open a new one)
  GET    /account            server_name, server_uuid, org_name, …
  POST   /server/devices     every device of this server, `limit` per page, with a cursor
  POST   /devices/sync       changes since a cursor (op_type added / modified / deleted)
  POST   /profile            define a profile → profile_uuid
  PUT    /profile/devices    assign: SUCCESS for this server's devices, NOT_ACCESSIBLE for others
  DELETE /profile/devices
Errors: a cursor of another server → 400 INVALID_CURSOR; one older than `cursor_ttl` → 400
EXPIRED_CURSOR; `terms_pending` → 403 T_C_NOT_SIGNED; `fail_next` statuses (503 with
Retry-After: 0, 429) are answered first. `make_server_token` builds the .p7m ABM gives an admin.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from oauthlib.oauth1.rfc5849 import signature as oauth_sig
from oauthlib.oauth1.rfc5849 import utils as oauth_utils


@dataclass
class DepServer:
    """One MDM server in ABM: its credentials and the iPads assigned to it."""
    consumer_key: str = field(default_factory=lambda: "CK_" + secrets.token_hex(16))
    consumer_secret: str = field(default_factory=lambda: "CS_" + secrets.token_hex(16))
    access_token: str = field(default_factory=lambda: "AT_" + secrets.token_hex(16))
    access_secret: str = field(default_factory=lambda: "AS_" + secrets.token_hex(16))
    server_uuid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    server_name: str = "MDM Văn phòng Chính phủ"
    org_name: str = "Văn phòng Chính phủ"
    expiry: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365))
    devices: dict = field(default_factory=dict)       # serial -> device dict
    events: list = field(default_factory=list)        # (seq, device dict with op_type)

    def credentials(self) -> dict:
        return {"consumer_key": self.consumer_key, "consumer_secret": self.consumer_secret,
                "access_token": self.access_token, "access_secret": self.access_secret,
                "access_token_expiry": self.expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}


@dataclass
class _Secrets:
    client_secret: str
    resource_owner_secret: str


def make_server_token(recipient: x509.Certificate, server: DepServer) -> bytes:
    """The .p7m ABM offers: S/MIME EnvelopedData to the MDM server's certificate, holding the credentials."""
    inner = ("Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
             "-----BEGIN MESSAGE-----\r\n" + json.dumps(server.credentials()) + "\r\n-----END MESSAGE-----\r\n")
    return (pkcs7.PKCS7EnvelopeBuilder().set_data(inner.encode()).add_recipient(recipient)
            .encrypt(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.Binary]))


class DepStandin:
    def __init__(self):
        self.servers: dict[str, DepServer] = {}
        self.sessions: dict[str, list] = {}           # token -> [consumer_key, calls left]
        self.profiles: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.session_calls = 1000
        self.cursor_ttl = dt.timedelta(days=7)
        self.terms_pending = False
        self.fail_next: list[int] = []
        self.page_limit = 1000
        self._lock = threading.Lock()
        self._seq = 0
        self._cursors: dict[str, tuple[str, int, dt.datetime]] = {}   # cursor -> (consumer_key, seq, issued)
        self._tls_dir = tempfile.mkdtemp(prefix="dep-standin-")
        self.ca_path, context = self._tls()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body, headers: dict | None = None):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = standin.handle(self.command, self.path, dict(self.headers.items()), raw,
                                                       self.server.server_port)
                self._answer(status, body, headers)

            do_GET = do_POST = do_PUT = do_DELETE = _dispatch

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _tls(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mdmenrollment.apple.com (test stand-in)")])
        now = dt.datetime.now(dt.timezone.utc)
        import ipaddress

        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        cert_path, key_path = f"{self._tls_dir}/cert.pem", f"{self._tls_dir}/key.pem"
        open(cert_path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
        open(key_path, "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
        return cert_path, ctx

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ ABM side (the tests act as Apple)
    def add_server(self, **kw) -> DepServer:
        server = DepServer(**kw)
        self.servers[server.consumer_key] = server
        return server

    def assign_device(self, server: DepServer, serial: str, model: str = "iPad Pro 11-inch (M4)", op: str = "added"):
        with self._lock:
            self._seq += 1
            device = {"serial_number": serial, "model": model, "description": "IPAD PRO 11 WI-FI 256GB",
                      "color": "SPACE BLACK", "asset_tag": "", "os": "iPadOS", "device_family": "iPad",
                      "profile_status": "empty", "device_assigned_date": dt.datetime.now(dt.timezone.utc).isoformat(),
                      "device_assigned_by": "admin@vpcp.gov.vn"}
            if op == "deleted":
                device = dict(server.devices.pop(serial, device))
            else:
                server.devices[serial] = device
            server.events.append((self._seq, {**device, "op_type": op,
                                              "op_date": dt.datetime.now(dt.timezone.utc).isoformat()}))

    def _cursor(self, key: str) -> str:
        cursor = base64.urlsafe_b64encode(secrets.token_bytes(18)).decode()
        self._cursors[cursor] = (key, self._seq, dt.datetime.now(dt.timezone.utc))
        return cursor

    # ------------------------------------------------------------------ the API
    def handle(self, method: str, path: str, headers: dict, raw: bytes, port: int):
        headers = {k.lower(): v for k, v in headers.items()}
        self.requests.append((method, path))
        if self.fail_next:
            return self.fail_next.pop(0), b'"SERVICE_UNAVAILABLE"', {"Retry-After": "0"}
        route = urlsplit(path).path
        if route == "/session" and method == "GET":
            return self._session(headers, f"https://127.0.0.1:{port}/session")
        key = self._authorised(headers.get("x-adm-auth-session"))
        if key is None:
            return 401, b'"UNAUTHORIZED"', {}
        if self.terms_pending:
            return 403, b'"T_C_NOT_SIGNED"', {}
        server = self.servers[key]
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, b'"MALFORMED_REQUEST_BODY"', {}
        if route == "/account" and method == "GET":
            return 200, {"server_name": server.server_name, "server_uuid": server.server_uuid,
                         "org_name": server.org_name, "org_email": "cntt@vpcp.gov.vn", "org_phone": "+84 24 0000 0000",
                         "org_address": "1 Hoàng Hoa Thám, Hà Nội", "admin_id": "admin@vpcp.gov.vn",
                         "org_type": "org", "org_version": "v2"}, {}
        if route == "/server/devices" and method == "POST":
            return self._fetch(server, body)
        if route == "/devices/sync" and method == "POST":
            return self._sync(server, body)
        if route == "/profile" and method == "POST":
            if not isinstance(body.get("url"), str) or not body["url"].startswith("https://"):
                return 400, b'"INVALID_URL"', {}
            profile_uuid = uuid.uuid4().hex.upper()
            self.profiles[profile_uuid] = {**body, "_server": key}
            return 200, {"profile_uuid": profile_uuid, "devices": {}}, {}
        if route == "/profile/devices" and method in ("PUT", "DELETE"):
            results = {}
            for serial in body.get("devices") or []:
                if serial in server.devices:
                    dev = server.devices[serial]
                    if method == "PUT":
                        if body.get("profile_uuid") not in self.profiles:
                            return 400, b'"PROFILE_NOT_FOUND"', {}
                        dev.update(profile_uuid=body["profile_uuid"], profile_status="assigned")
                    else:
                        dev.update(profile_uuid=None, profile_status="removed")
                    results[serial] = "SUCCESS"
                else:
                    results[serial] = "NOT_ACCESSIBLE"
            return 200, {"profile_uuid": body.get("profile_uuid"), "devices": results}, {}
        return 404, b'"NOT_FOUND"', {}

    def _session(self, headers: dict, url: str):
        auth = headers.get("authorization", "")
        if not auth.startswith("OAuth "):
            return 401, b'"UNAUTHORIZED"', {}
        params = {k: oauth_utils.unescape(v) for k, v in oauth_utils.parse_authorization_header(auth)}
        server = self.servers.get(params.get("oauth_consumer_key", ""))
        if server is None or params.get("oauth_token") != server.access_token \
                or params.get("oauth_signature_method") != "HMAC-SHA1":
            return 401, b'"UNAUTHORIZED"', {}
        collected = [(k, v) for k, v in params.items() if k not in ("oauth_signature", "realm")]
        base = oauth_sig.signature_base_string("GET", oauth_sig.base_string_uri(url),
                                               oauth_sig.normalize_parameters(collected))
        expected = oauth_sig.sign_hmac_sha1_with_client(base, _Secrets(server.consumer_secret, server.access_secret))
        if expected != params.get("oauth_signature"):
            return 401, b'"UNAUTHORIZED"', {}
        if server.expiry <= dt.datetime.now(dt.timezone.utc):
            return 403, b'"FORBIDDEN"', {}
        token = secrets.token_urlsafe(24)
        self.sessions[token] = [server.consumer_key, self.session_calls]
        return 200, {"auth_session_token": token}, {}

    def _authorised(self, token: str | None) -> str | None:
        with self._lock:
            held = self.sessions.get(token or "")
            if held is None or held[1] <= 0:
                self.sessions.pop(token or "", None)
                return None
            held[1] -= 1
            return held[0]

    def _check_cursor(self, server: DepServer, cursor):
        if cursor is None:
            return None
        found = self._cursors.get(cursor)
        if found is None or found[0] != server.consumer_key:
            return 400, b'"INVALID_CURSOR"', {}
        if dt.datetime.now(dt.timezone.utc) - found[2] > self.cursor_ttl:
            return 400, b'"EXPIRED_CURSOR"', {}
        return None

    def _fetch(self, server: DepServer, body: dict):
        bad = self._check_cursor(server, body.get("cursor"))
        if bad:
            return bad
        limit = min(int(body.get("limit") or 100), self.page_limit)
        offset = self._cursors[body["cursor"]][1] if body.get("cursor") else 0
        serials = sorted(server.devices)
        page = [server.devices[s] for s in serials[offset:offset + limit]]
        more = offset + limit < len(serials)
        cursor = base64.urlsafe_b64encode(secrets.token_bytes(18)).decode()
        # The cursor of a finished fetch marks "now" for a later sync.
        self._cursors[cursor] = (server.consumer_key, offset + limit if more else self._seq,
                                 dt.datetime.now(dt.timezone.utc))
        return 200, {"devices": page, "cursor": cursor, "more_to_follow": more,
                     "fetched_until": dt.datetime.now(dt.timezone.utc).isoformat()}, {}

    def _sync(self, server: DepServer, body: dict):
        if not body.get("cursor"):
            return 400, b'"CURSOR_REQUIRED"', {}
        bad = self._check_cursor(server, body["cursor"])
        if bad:
            return bad
        since = self._cursors[body["cursor"]][1]
        changes = [d for seq, d in server.events if seq > since]
        return 200, {"devices": changes, "cursor": self._cursor(server.consumer_key), "more_to_follow": False,
                     "fetched_until": dt.datetime.now(dt.timezone.utc).isoformat()}, {}

    def age_cursors(self, by: dt.timedelta) -> None:
        for k, (key, seq, at) in list(self._cursors.items()):
            self._cursors[k] = (key, seq, at - by)
