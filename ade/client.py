"""Apple's device-enrollment API (the "DEP" API of Apple Business Manager), as a small client.

Authentication: GET /session signed with OAuth 1.0a (HMAC-SHA1; consumer key/secret and access
token/secret from the server token) answers an auth session token, sent as X-ADM-Auth-Session
on every call; Apple may hand a new one back in a response header, and a 401 means the session
expired: the client opens a new one and repeats the call once. 429 and 5xx are retried after
Retry-After (bounded); 403 T_C_NOT_SIGNED means the organisation must accept Apple's new terms
in ABM. Cursor errors (EXPIRED_CURSOR, INVALID_CURSOR) surface as CursorError so the sync can
start over with a full fetch. The base URL is configurable (tests run a local stand-in).
"""
from __future__ import annotations

import logging
import time

import httpx
from oauthlib import oauth1

from .token import ServerToken

log = logging.getLogger("ade.client")

DEFAULT_BASE_URL = "https://mdmenrollment.apple.com"
PROTOCOL_VERSION = "3"
MAX_RETRIES = 3
MAX_WAIT = 30.0


class AppleError(RuntimeError):
    """Apple refused; `code` is Apple's error (T_C_NOT_SIGNED, FORBIDDEN, …) or an HTTP status."""

    def __init__(self, code: str, status: int, message: str = ""):
        super().__init__(message or code)
        self.code, self.status = code, status


class CursorError(AppleError):
    """EXPIRED_CURSOR / INVALID_CURSOR: the sync must start again from a full fetch."""


class DepClient:
    def __init__(self, token: ServerToken, base_url: str | None = None, *, verify=True, timeout: float = 30.0,
                 sleep=time.sleep):
        self.token = token
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.session_token: str | None = None
        self._http = httpx.Client(verify=verify, timeout=timeout, follow_redirects=False,
                                  headers={"User-Agent": "ipad-mdm/1", "X-Server-Protocol-Version": PROTOCOL_VERSION})
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ session
    def authenticate(self) -> str:
        url = f"{self.base_url}/session"
        signer = oauth1.Client(self.token.consumer_key, client_secret=self.token.consumer_secret,
                               resource_owner_key=self.token.access_token,
                               resource_owner_secret=self.token.access_secret,
                               signature_method=oauth1.SIGNATURE_HMAC_SHA1, realm="ADM")
        _, headers, _ = signer.sign(url, http_method="GET")
        r = self._send("GET", url, headers=headers)
        if r.status_code != 200:
            raise self._error(r)
        try:
            self.session_token = r.json()["auth_session_token"]
        except (ValueError, KeyError, TypeError):
            raise AppleError("BAD_SESSION_RESPONSE", r.status_code, "Apple answered /session without a token") from None
        return self.session_token

    # ------------------------------------------------------------------ calls
    def call(self, method: str, path: str, json_body=None) -> dict:
        if self.session_token is None:
            self.authenticate()
        for renewed in (False, True):
            r = self._send(method, f"{self.base_url}{path}", json_body=json_body,
                           headers={"X-ADM-Auth-Session": self.session_token,
                                    "Content-Type": "application/json;charset=UTF8"})
            fresh = r.headers.get("X-ADM-Auth-Session")
            if fresh:
                self.session_token = fresh
            if r.status_code == 401 and not renewed:
                self.authenticate()  # the session expired (Apple ends them after a few minutes)
                continue
            if r.status_code != 200:
                raise self._error(r)
            try:
                return r.json()
            except ValueError:
                raise AppleError("BAD_RESPONSE", r.status_code, f"{path}: not JSON") from None
        raise AppleError("UNAUTHORIZED", 401)

    def _send(self, method: str, url: str, *, headers: dict, json_body=None) -> httpx.Response:
        for attempt in range(MAX_RETRIES + 1):
            try:
                r = self._http.request(method, url, headers=headers, json=json_body)
            except httpx.TransportError as exc:
                if attempt == MAX_RETRIES:
                    raise AppleError("UNREACHABLE", 0, f"Apple's API unreachable: {type(exc).__name__}") from None
                self._sleep(min(2 ** attempt, MAX_WAIT))
                continue
            if (r.status_code == 429 or r.status_code >= 500) and attempt < MAX_RETRIES:
                try:
                    wait = float(r.headers.get("Retry-After", ""))
                except ValueError:
                    wait = 2 ** attempt
                log.warning("Apple answered %s to %s %s; retrying in %.0f s", r.status_code, method, url, wait)
                self._sleep(min(max(wait, 0.0), MAX_WAIT))
                continue
            return r
        return r

    @staticmethod
    def _error(r: httpx.Response) -> AppleError:
        text = r.text.strip()[:200]
        code = text.strip('"') if text and " " not in text.strip('"') else str(r.status_code)
        try:
            body = r.json()
            if isinstance(body, dict) and isinstance(body.get("code"), str):
                code = body["code"]
        except ValueError:
            pass
        cls = CursorError if code in ("EXPIRED_CURSOR", "INVALID_CURSOR", "CURSOR_REQUIRED") else AppleError
        return cls(code, r.status_code, f"Apple answered {r.status_code} {code}")

    # ------------------------------------------------------------------ the endpoints used
    def account(self) -> dict:
        return self.call("GET", "/account")

    def fetch_devices(self, cursor: str | None = None, limit: int = 1000) -> dict:
        body = {"limit": limit}
        if cursor:
            body["cursor"] = cursor
        return self.call("POST", "/server/devices", body)

    def sync_devices(self, cursor: str, limit: int = 1000) -> dict:
        return self.call("POST", "/devices/sync", {"cursor": cursor, "limit": limit})

    def define_profile(self, profile: dict) -> dict:
        return self.call("POST", "/profile", profile)

    def assign_profile(self, profile_uuid: str, serials: list[str]) -> dict:
        return self.call("PUT", "/profile/devices", {"profile_uuid": profile_uuid, "devices": serials})

    def remove_profile(self, serials: list[str]) -> dict:
        return self.call("DELETE", "/profile/devices", {"devices": serials})
