"""A local HTTP/2 stand-in for the APNs provider API, for tests.

Hypercorn serves a small ASGI app in a background thread, over TLS (ALPN 'h2'
only, optionally requiring a client certificate like real APNs) or plain h2c.
It validates requests the way APNs does for MDM pushes, records the accepted
ones, and can be told to fail or hang upcoming requests.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hypercorn.asyncio import serve
from hypercorn.config import Config

_PATH_RE = re.compile(r"/3/device/([^/]+)")
_HEX_RE = re.compile(r"[0-9a-fA-F]{64,200}")

DEFAULT_REASONS = {
    400: "BadDeviceToken",
    403: "BadCertificate",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


@dataclass(frozen=True)
class RecordedPush:
    """One push the stand-in accepted."""

    token: str
    topic: str
    magic: str
    headers: dict[str, str]
    http_version: str
    client: tuple[str, int] | None  # peer address; the port identifies the connection


@dataclass(frozen=True)
class RecordedRequest:
    """Any request that reached the app, with the status it got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    http_version: str
    status: int | None = None  # None: hung, never answered
    reason: str | None = None


def _pem_bytes(obj: Any, *, is_key: bool = False) -> bytes:
    """PEM bytes from a cryptography object, PEM bytes/str, or a file path."""
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    if is_key and hasattr(obj, "private_bytes"):
        return obj.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str) and obj.lstrip().startswith("-----BEGIN"):
        return obj.encode()
    with open(os.fspath(obj), "rb") as fh:
        return fh.read()


def _test_ca_and_server_cert() -> tuple[bytes, bytes, bytes]:
    """A throwaway test CA and a server certificate for 127.0.0.1 it issued: (ca, cert, key) PEM.
    The server's client verifies the stand-in as it verifies Apple, against a CA it was given."""
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "APNs stand-in test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apns-standin")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _pem_bytes(ca), _pem_bytes(cert), _pem_bytes(key, is_key=True)


class APNsStandIn:
    """The server; use start_apns_standin() rather than constructing it directly."""

    def __init__(
        self,
        *,
        tls: bool = True,
        expected_topic: str | None = None,
        client_ca_pem: Any = None,
        server_cert: Any = None,
        server_key: Any = None,
    ) -> None:
        self.tls = tls
        self.expected_topic = expected_topic
        self._cond = threading.Condition()
        self._pushes: list[RecordedPush] = []
        self._requests: list[RecordedRequest] = []
        self._faults: collections.deque[tuple[str, int | None, str | None]] = collections.deque()
        self._tmp = tempfile.TemporaryDirectory(prefix="apns-standin-")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._release: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

        self.config = Config()
        self.config.graceful_timeout = 1.0
        self.config.accesslog = None
        self.config.loglevel = "WARNING"
        # CA PEM a client must trust to verify the server (None for h2c).
        self.server_ca_pem: bytes | None = None
        self.server_ca_path: str | None = None
        if tls:
            if server_cert is None:
                self.server_ca_pem, cert_pem, key_pem = _test_ca_and_server_cert()
            else:
                cert_pem, key_pem = _pem_bytes(server_cert), _pem_bytes(server_key, is_key=True)
            self.config.certfile = self._write("server.pem", cert_pem)
            self.config.keyfile = self._write("server.key", key_pem)
            if self.server_ca_pem:
                self.server_ca_path = self._write("server-ca.pem", self.server_ca_pem)
            # Real APNs negotiates nothing but h2.
            self.config.alpn_protocols = ["h2"]
            if client_ca_pem is not None:
                self.config.ca_certs = self._write("client-ca.pem", _pem_bytes(client_ca_pem))
                self.config.verify_mode = ssl.CERT_REQUIRED

        # Bind and listen before the server thread runs, so the port is known
        # and connections made right after start() queue instead of failing.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port: int = sock.getsockname()[1]
        self.config.bind = [f"fd://{sock.detach()}"]  # hypercorn now owns the fd
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self._tmp.name, name)
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    # -- control (any thread) ---------------------------------------------

    @property
    def pushes(self) -> list[RecordedPush]:
        """A snapshot of the accepted pushes, oldest first."""
        with self._cond:
            return list(self._pushes)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request seen, including rejected and failed ones."""
        with self._cond:
            return list(self._requests)

    def fail_next(self, n: int, status: int, reason: str | None = None) -> None:
        """Answer the next n requests with `status` (and an APNs-style reason)."""
        with self._cond:
            self._faults.extend([("fail", status, reason or DEFAULT_REASONS.get(status, "Error"))] * n)

    def clear_faults(self) -> None:
        """Forget queued failures and hangs: APNs is healthy again."""
        with self._cond:
            self._faults.clear()

    def hang_next(self, n: int) -> None:
        """Never answer the next n requests (until stop()), to provoke timeouts."""
        with self._cond:
            self._faults.extend([("hang", None, None)] * n)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedPush]:
        """Block until at least `count` pushes were accepted; TimeoutError if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._pushes) >= count, timeout):
                raise TimeoutError(f"expected {count} pushes, got {len(self._pushes)} within {timeout}s")
            return list(self._pushes)

    def start(self) -> "APNsStandIn":
        self._thread = threading.Thread(target=self._run, name="apns-standin", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or self._error is not None:
            self.stop()
            raise RuntimeError("APNs stand-in failed to start") from self._error
        return self

    def stop(self) -> None:
        """Release hung requests, shut the server down and wait for its thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            def _stop() -> None:
                self._release.set()
                self._shutdown.set()

            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(_stop)
        if self._thread is not None:
            self._thread.join(10)
        self._tmp.cleanup()

    # -- server thread ----------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._shutdown = asyncio.Event()
        self._release = asyncio.Event()
        self._loop = loop
        try:
            loop.run_until_complete(serve(self._app, self.config, shutdown_trigger=self._shutdown.wait))
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
        finally:
            loop.close()

    async def _app(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                    self._started.set()
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return

        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path, version = scope["method"], scope["path"], scope["http_version"]
        apns_id = headers.get("apns-id") or str(uuid.uuid4())

        with self._cond:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault[0] == "hang":
            self._record(RecordedRequest(method, path, headers, body, version))
            await self._release.wait()
            return  # the client has long given up; hypercorn tidies the stream

        if fault is not None:
            status, reason = fault[1], fault[2]
        else:
            status, reason, push = self._validate(method, path, headers, body, version, scope.get("client"))
        self._record(RecordedRequest(method, path, headers, body, version, status, reason))
        if fault is None and status == 200:
            # Record before answering: once the client sees 200 the push is visible.
            with self._cond:
                self._pushes.append(push)
                self._cond.notify_all()

        payload = b""
        if status != 200:
            err: dict[str, Any] = {"reason": reason}
            if status == 410:
                err["timestamp"] = int(time.time() * 1000)
            payload = json.dumps(err).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"apns-id", apns_id.encode()), (b"content-type", b"application/json")]
                if payload
                else [(b"apns-id", apns_id.encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    def _validate(self, method, path, headers, body, version, client):
        """(status, reason, RecordedPush|None), mirroring APNs' checks and reasons."""
        if method != "POST":
            return 405, "MethodNotAllowed", None
        match = _PATH_RE.fullmatch(path)
        if not match:
            return 404, "BadPath", None
        token = match.group(1)
        if not _HEX_RE.fullmatch(token) or len(token) % 2:
            return 400, "BadDeviceToken", None
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", None
        if self.expected_topic is not None and topic != self.expected_topic:
            return 400, "BadTopic", None
        if headers.get("apns-push-type") != "mdm":
            return 400, "InvalidPushType", None
        if headers.get("apns-priority", "10") not in ("5", "10"):
            return 400, "BadPriority", None
        if not headers.get("apns-expiration", "0").isdigit():
            return 400, "BadExpirationDate", None
        if "apns-id" in headers:
            try:
                uuid.UUID(headers["apns-id"])
            except ValueError:
                return 400, "BadMessageId", None
        if not body:
            return 400, "PayloadEmpty", None
        if len(body) > 4096:
            return 413, "PayloadTooLarge", None
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "BadPayload", None
        if not (isinstance(payload, dict) and set(payload) == {"mdm"} and isinstance(payload["mdm"], str)):
            return 400, "BadPayload", None
        push = RecordedPush(token.lower(), topic, payload["mdm"], headers, version, tuple(client) if client else None)
        return 200, None, push


@contextlib.contextmanager
def start_apns_standin(
    tls: bool = True,
    expected_topic: str | None = None,
    client_ca_pem: Any = None,
    server_cert: Any = None,
    server_key: Any = None,
) -> Iterator[APNsStandIn]:
    """Run an APNs stand-in on 127.0.0.1:<free port> for the duration of the block.

    With tls=True and no server_cert, a certificate from a throwaway test CA is made; trust
    `.server_ca_path` (that CA). With client_ca_pem, clients must present a certificate
    issued by that CA (mutual TLS, as real APNs requires).
    """
    standin = APNsStandIn(
        tls=tls,
        expected_topic=expected_topic,
        client_ca_pem=client_ca_pem,
        server_cert=server_cert,
        server_key=server_key,
    )
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
