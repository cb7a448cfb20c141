"""APNs provider client for MDM wake-up pushes.

An MDM push carries no command: it only asks the device to check in with the
MDM server. Apple requires HTTP/2 and mutual TLS with the MDM push certificate,
whose subject UID is the push topic. Pushes are idempotent (a device that wakes
twice just polls twice), so retrying after an ambiguous network error is safe.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import ssl
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"

# Worth another attempt: APNs is overloaded or had an internal error.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Transport failures after which the same request may well succeed.
_RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

_TOKEN_RE = re.compile(r"[0-9a-fA-F]{64,200}")


def _redact(token: str) -> str:
    """The loggable part of a device token."""
    return token[:8] + "…"


_TOKEN_PATH_STR = re.compile(r"(/3/device/[0-9a-fA-F]{8})[0-9a-fA-F]+")
_TOKEN_PATH_BYTES = re.compile(rb"(/3/device/[0-9a-fA-F]{8})[0-9a-fA-F]+")


def _redact_arg(arg):
    if isinstance(arg, str):
        return _TOKEN_PATH_STR.sub(r"\1…", arg)
    if isinstance(arg, bytes):
        return _TOKEN_PATH_BYTES.sub(rb"\1...", arg)
    if isinstance(arg, (int, float)) or arg is None:
        return arg
    text = str(arg)  # URLs, header tuples
    return _TOKEN_PATH_STR.sub(r"\1…", text) if "/3/device/" in text else arg


class _RedactDeviceTokens(logging.Filter):
    """Shortens device tokens in APNs request paths logged by httpx/hpack.

    httpx logs every request URL at INFO and hpack logs the ':path' header at
    DEBUG; both would otherwise write whole device tokens into our logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _redact_arg(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


_REDACTOR = _RedactDeviceTokens()
for _name in ("httpx", "hpack.hpack", "hpack.table"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _RedactDeviceTokens) for f in _logger.filters):
        _logger.addFilter(_REDACTOR)


def normalize_token(push_token_hex: str) -> str:
    """Validate a hex device token and return it in lower case.

    Raises ValueError for anything that is not 64..200 hex digits (whole bytes).
    """
    if not isinstance(push_token_hex, str) or not _TOKEN_RE.fullmatch(push_token_hex):
        raise ValueError("push token must be 64..200 hexadecimal characters")
    if len(push_token_hex) % 2:
        raise ValueError("push token must be a whole number of bytes in hex")
    return push_token_hex.lower()


@dataclass(frozen=True)
class PushCredentials:
    """The Apple MDM push certificate and its private key (PEM files)."""

    cert_path: str
    key_path: str
    certificate: x509.Certificate = field(repr=False)
    # Only for the TLS layer; kept out of repr so it never reaches a log line.
    key_password: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_files(
        cls, cert_path: str | os.PathLike, key_path: str | os.PathLike, password: bytes | None = None
    ) -> "PushCredentials":
        """Load and check the pair; raises ValueError if unusable."""
        cert_path, key_path = os.fspath(cert_path), os.fspath(key_path)
        with open(cert_path, "rb") as fh:
            certs = x509.load_pem_x509_certificates(fh.read())
        certificate = certs[0]  # the leaf; any intermediates follow it
        with open(key_path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=password)
        # A mismatched pair would only surface as an opaque TLS failure later.
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
            raise ValueError("push private key does not match the push certificate")
        creds = cls(cert_path, key_path, certificate, password)
        _ = creds.topic  # fail now, not at the first push, when the UID is missing
        if creds.not_valid_after < dt.datetime.now(dt.timezone.utc):
            log.warning("MDM push certificate for %s expired on %s", creds.topic, creds.not_valid_after)
        return creds

    @property
    def topic(self) -> str:
        """The push topic: the subject UID, e.g. com.apple.mgmt.External.<uuid>."""
        attrs = self.certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
        if not attrs or not str(attrs[0].value).strip():
            raise ValueError("push certificate subject has no UID (topic) attribute")
        return str(attrs[0].value).strip()

    @property
    def not_valid_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True)
class PushResult:
    """Outcome of one push after all attempts."""

    ok: bool
    status_code: int | None  # None when no HTTP response was ever received
    apns_id: str | None
    reason: str | None  # APNs JSON 'reason', or the transport error's name
    attempts: int
    permanent_failure: bool = False  # retrying the same request later will not help
    token_unregistered: bool = False  # 410: the token is dead, stop pushing to it
    timestamp: int | None = None  # for 410: ms since epoch when the token became invalid


def _tls_config_error(exc: BaseException) -> str | None:
    """The SSL reason when `exc` stems from a certificate problem, else None.

    Such failures (untrusted server; with TLS 1.2, a rejected client
    certificate) are configuration errors that retrying cannot fix. Under TLS
    1.3 a rejected client certificate surfaces only as an EOF on the first
    write, which looks like any dropped connection and is retried.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur.reason or "CERTIFICATE_VERIFY_FAILED"
        if isinstance(cur, ssl.SSLError) and "CERTIFICATE" in (cur.reason or "").upper():
            return cur.reason
        cur = cur.__cause__ or cur.__context__
    return None


class APNsClient:
    """Sends MDM pushes over one HTTP/2 connection with mutual TLS.

    `base_url` is APNs (PRODUCTION_URL / SANDBOX_URL) or, for tests, an
    `http://` h2c or `https://` stand-in. `verify` is True (public CAs) or the
    path of a CA bundle PEM. `sleep` is injectable so tests need not wait out
    the backoff.
    """

    def __init__(
        self,
        base_url: str,
        credentials: PushCredentials,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        verify: bool | str | os.PathLike = True,
        expiration_seconds: int = 86400,
        sleep: Callable[[float], None] = time.sleep,
        proxy: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError("base_url must be http:// or https://")
        self.base_url = str(base_url).rstrip("/")
        self.credentials = credentials
        self.topic = credentials.topic
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.expiration_seconds = expiration_seconds
        self._sleep = sleep
        self._random = random.Random()
        ssl_context = self._ssl_context(verify) if url.scheme == "https" else False
        # http1=False: APNs speaks only HTTP/2; for http:// this means h2c with
        # prior knowledge, for https:// it keeps us on h2 whatever ALPN says.
        # trust_env=False: an ambient HTTPS_PROXY must not silently reroute pushes.
        self._http = httpx.Client(
            http1=False,
            http2=True,
            verify=ssl_context,
            timeout=httpx.Timeout(timeout),
            trust_env=False,
            proxy=proxy,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def _ssl_context(self, verify: bool | str | os.PathLike) -> ssl.SSLContext:
        if verify is False:
            raise ValueError("server certificate verification cannot be disabled")
        # Always verified: a local stand-in (IPAD_MDM_APNS_URL) is trusted through IPAD_MDM_APNS_CA,
        # never by skipping verification.
        if verify is True:
            import certifi  # httpx's own dependency

            ctx = ssl.create_default_context(cafile=certifi.where())
        else:
            ctx = ssl.create_default_context(cafile=os.fspath(verify))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        c = self.credentials
        ctx.load_cert_chain(c.cert_path, c.key_path, password=c.key_password)
        return ctx

    # -- public API -------------------------------------------------------

    def push(self, push_token_hex: str, push_magic: str) -> PushResult:
        """Wake one device. Never raises for APNs/network failures (see PushResult).

        Raises ValueError for a malformed token or empty push magic.
        """
        token = normalize_token(push_token_hex)
        if not isinstance(push_magic, str) or not push_magic:
            raise ValueError("push magic must be a non-empty string")
        return self._push(token, push_magic)

    def push_many(self, items: Iterable[tuple[str, str]], *, max_workers: int = 1) -> list[PushResult]:
        """Push to many (token, magic) pairs over the same HTTP/2 connection.

        Results are in input order. A malformed token yields a failed result
        (reason 'BadDeviceToken') instead of aborting the batch. With
        max_workers > 1 the pushes run as concurrent streams on the connection.
        """
        items = list(items)

        def one(item: tuple[str, str]) -> PushResult:
            token, magic = item
            try:
                return self.push(token, magic)
            except ValueError:
                log.warning("APNs push skipped: malformed token or push magic")
                return PushResult(False, None, None, "BadDeviceToken", 0, permanent_failure=True)

        if max_workers <= 1 or len(items) <= 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
            return list(pool.map(one, items))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "APNsClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- internals --------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Exponential delay with jitter so many retrying pushes spread out."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return self._random.uniform(ceiling / 2, ceiling)

    def _push(self, token: str, push_magic: str) -> PushResult:
        url = f"{self.base_url}/3/device/{token}"
        body = json.dumps({"mdm": push_magic}, separators=(",", ":")).encode()
        # Our own id, constant across retries, so log lines can be correlated.
        apns_id = str(uuid.uuid4())
        last: PushResult | None = None
        for attempt in range(1, self.max_attempts + 1):
            headers = {
                "apns-topic": self.topic,
                "apns-push-type": "mdm",
                "apns-priority": "10",
                "apns-expiration": str(int(time.time()) + self.expiration_seconds),
                "apns-id": apns_id,
                "content-type": "application/json",
            }
            try:
                response = self._http.post(url, content=body, headers=headers)
            except _RETRYABLE_ERRORS as exc:
                tls_reason = _tls_config_error(exc)
                if tls_reason:
                    log.error("APNs push to %s failed: TLS certificate problem (%s)", _redact(token), tls_reason)
                    return PushResult(False, None, apns_id, f"TLS: {tls_reason}", attempt, permanent_failure=True)
                last = PushResult(False, None, apns_id, type(exc).__name__, attempt)
                log.warning("APNs push to %s attempt %d/%d: %s", _redact(token), attempt, self.max_attempts, type(exc).__name__)
            else:
                result = self._result(response, apns_id, attempt)
                if result.ok:
                    log.debug("APNs push to %s accepted (apns-id %s)", _redact(token), result.apns_id)
                    return result
                if response.status_code not in RETRYABLE_STATUSES:
                    log.warning(
                        "APNs push to %s rejected: %s %s", _redact(token), response.status_code, result.reason
                    )
                    return result
                last = result
                log.warning(
                    "APNs push to %s attempt %d/%d: %s %s",
                    _redact(token), attempt, self.max_attempts, response.status_code, result.reason,
                )
            if attempt < self.max_attempts:
                self._sleep(self._backoff(attempt))
        assert last is not None
        log.error("APNs push to %s gave up after %d attempts (%s)", _redact(token), last.attempts, last.reason)
        return last

    @staticmethod
    def _result(response: httpx.Response, apns_id: str, attempt: int) -> PushResult:
        reason = timestamp = None
        if response.content:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if isinstance(payload, dict):
                reason = payload.get("reason")
                ts = payload.get("timestamp")
                timestamp = ts if isinstance(ts, int) else None
        status = response.status_code
        return PushResult(
            ok=status == 200,
            status_code=status,
            apns_id=response.headers.get("apns-id", apns_id),
            reason=reason,
            attempts=attempt,
            permanent_failure=status != 200 and status not in RETRYABLE_STATUSES,
            token_unregistered=status == 410,
            timestamp=timestamp if status == 410 else None,
        )
