"""How a webhook is signed, and how a receiver checks it (pure: no HTTP, no storage).

Each attempt carries
    X-MDM-Event-Id      the event's UUID: the same on every retry (deduplicate on it)
    X-MDM-Event-Type    e.g. verdict.changed
    X-MDM-Timestamp     Unix seconds of this attempt
    X-MDM-Signature     v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

A receiver (see `verify`) recomputes the HMAC over the raw body bytes with its copy of the secret,
compares in constant time, refuses a timestamp more than `tolerance` seconds from its clock
(a captured request replayed later), and refuses an event id it has already accepted (a
captured request replayed within the window). Several v1= values, comma-separated, may appear
while a secret is being rotated; any one matching is enough.
"""
from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_VERSION = "v1"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def headers(secret: bytes, event_id: str, event: str, body: bytes, timestamp: int | None = None) -> dict:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"Content-Type": "application/json", "X-MDM-Event-Id": event_id, "X-MDM-Event-Type": event,
            "X-MDM-Timestamp": str(ts), "X-MDM-Signature": signature(secret, ts, body),
            "User-Agent": "ipad-mdm-webhook/1"}


class Rejected(ValueError):
    """The request is not a genuine, fresh, first delivery; `reason` says which check failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def verify(secret: bytes, headers, body: bytes, *, seen, tolerance: int = 300, now: float | None = None) -> str:
    """Receiver side. `headers`: any case-insensitive mapping; `seen(event_id) -> bool` records the
    id and answers whether it was already recorded (a set's add-and-test, or a database's unique
    insert). Returns the event id; raises Rejected."""
    sent = headers.get("X-MDM-Signature") or ""
    ts_raw = headers.get("X-MDM-Timestamp") or ""
    event_id = headers.get("X-MDM-Event-Id") or ""
    if not sent or not ts_raw.isdigit() or not event_id:
        raise Rejected("missing_headers")
    ts = int(ts_raw)
    expected = signature(secret, ts, body)
    if not any(hmac.compare_digest(expected, part.strip()) for part in sent.split(",")):
        raise Rejected("bad_signature")
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise Rejected("stale_timestamp")
    if seen(event_id):
        raise Rejected("replayed")
    return event_id
