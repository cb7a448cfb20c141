"""Fan events out to subscribers and deliver them, truthfully and without losing any.

  fan_out      outbox events not yet dispatched → one delivery row per subscriber that wants them
               (unique per subscriber and event: running twice, or in two workers, delivers once)
  deliver_due  claim due deliveries one by one (a conditional UPDATE: exactly one worker wins),
               POST outside any transaction, record the outcome; failures back off
               30 s, 1, 2, 4 … minutes up to 6 hours, and after MAX_ATTEMPTS the delivery is
               marked failed (kept in the log; `retry` sends it again)
A receiver that is down therefore loses nothing: its deliveries wait in the database, and the
periodic job (and every new event) tries again when they are due.
"""
from __future__ import annotations

import datetime as dt
import logging
import re

import httpx
from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.outbox import EVENTS, OutboxEvent

from . import signing
from .models import WebhookDelivery, WebhookSubscriber

log = logging.getLogger("webhooks")

MAX_ATTEMPTS = 15
FIRST_BACKOFF = 30
MAX_BACKOFF = 6 * 3600
# A claimed delivery that its worker never finished (the worker died) is due again after this.
LEASE = dt.timedelta(seconds=120)
TIMEOUT = 10.0
BATCH = 200


class WebhookError(ValueError):
    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


# ------------------------------------------------------------------ subscribers
def _check_url(url) -> str:
    if not isinstance(url, str) or len(url) > 1024 or not re.match(r"https?://[^/\s?#]+(/\S*)?\Z", url):
        raise WebhookError("url", "url must be an http(s) URL of at most 1,024 characters")
    return url


def _check_events(events) -> list[str]:
    if events in (None, "*", ["*"]):
        return list(EVENTS)
    if not isinstance(events, list) or not events or any(e not in EVENTS for e in events):
        raise WebhookError("events", f"events is a list from: {', '.join(EVENTS)} (or \"*\")")
    return sorted(set(events))


def add_subscriber(session: Session, fernet, *, name, url, secret, events=None, by: str = "") -> WebhookSubscriber:
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 128:
        raise WebhookError("name", "name is 1 to 128 characters")
    if not isinstance(secret, str) or not 32 <= len(secret) <= 256:
        raise WebhookError("secret", "secret is 32 to 256 characters (generate it where the receiver keeps it)")
    row = WebhookSubscriber(name=name.strip(), url=_check_url(url), events=_check_events(events),
                            secret_enc=fernet.encrypt(secret.encode()).decode(), created_by=by[:128])
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise WebhookError("name", "a subscriber with this name exists", 409) from None
    log.info("webhook subscriber %s (%s) added by %s for %s", row.id, row.name, by, ",".join(row.events))
    return row


def update_subscriber(session: Session, row: WebhookSubscriber, data: dict, fernet) -> WebhookSubscriber:
    if "url" in data:
        row.url = _check_url(data["url"])
    if "events" in data:
        row.events = _check_events(data["events"])
    if "active" in data:
        if not isinstance(data["active"], bool):
            raise WebhookError("active", "active is true or false")
        row.active = data["active"]
    if "secret" in data:
        if not isinstance(data["secret"], str) or not 32 <= len(data["secret"]) <= 256:
            raise WebhookError("secret", "secret is 32 to 256 characters")
        row.secret_enc = fernet.encrypt(data["secret"].encode()).decode()
    session.flush()
    return row


def subscriber_dict(row: WebhookSubscriber, counts: dict | None = None) -> dict:
    # The secret is never part of it.
    out = {"id": row.id, "name": row.name, "url": row.url, "events": list(row.events or []), "active": row.active,
           "created_by": row.created_by, "created_at": row.created_at.isoformat()}
    if counts is not None:
        out["deliveries"] = counts
    return out


def delivery_dict(d: WebhookDelivery) -> dict:
    return {"id": d.id, "event_id": d.event_id, "event": d.event, "status": d.status, "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at.isoformat() if d.status == "pending" else None,
            "last_attempt_at": d.last_attempt_at.isoformat() if d.last_attempt_at else None,
            "last_status": d.last_status, "last_error": d.last_error, "created_at": d.created_at.isoformat(),
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None}


# ------------------------------------------------------------------ fan-out
def fan_out(session: Session, limit: int = 1000) -> int:
    """Deliveries for outbox events not yet dispatched. Returns how many events were dispatched."""
    stmt = select(OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.event).where(
        OutboxEvent.dispatched_at.is_(None)).order_by(OutboxEvent.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    events = session.execute(stmt).all()
    if not events:
        return 0
    subscribers = session.execute(select(WebhookSubscriber.id, WebhookSubscriber.events)
                                  .where(WebhookSubscriber.active.is_(True))).all()
    now = utcnow()
    rows = [{"subscriber_id": sid, "outbox_id": oid, "event_id": eid, "event": name, "status": "pending",
             "attempts": 0, "next_attempt_at": now, "created_at": now}
            for oid, eid, name in events for sid, wanted in subscribers if name in (wanted or ())]
    if rows:
        session.execute(_insert_ignore(session), rows)
    session.execute(update(OutboxEvent).where(OutboxEvent.id.in_([e[0] for e in events]))
                    .values(dispatched_at=now))
    return len(events)


def _insert_ignore(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(WebhookDelivery).on_conflict_do_nothing(constraint="uq_webhook_delivery_event")
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(WebhookDelivery).on_conflict_do_nothing()


# ------------------------------------------------------------------ delivery
def backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF))


def _claim(database, now: dt.datetime, limit: int) -> list[tuple]:
    """Due deliveries, each claimed by moving its next attempt a lease ahead (one worker wins)."""
    claimed = []
    with database.session() as s:
        ids = s.scalars(select(WebhookDelivery.id).where(WebhookDelivery.status == "pending",
                                                         WebhookDelivery.next_attempt_at <= now)
                        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)).all()
    for did in ids:
        with database.session() as s:
            won = s.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == did, WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now).values(next_attempt_at=now + LEASE)).rowcount
            if not won:
                continue
            row = s.execute(select(WebhookDelivery.id, WebhookDelivery.attempts, WebhookDelivery.event_id,
                                   WebhookDelivery.event, OutboxEvent.body, WebhookSubscriber.url,
                                   WebhookSubscriber.secret_enc, WebhookSubscriber.active)
                            .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.outbox_id)
                            .join(WebhookSubscriber, WebhookSubscriber.id == WebhookDelivery.subscriber_id)
                            .where(WebhookDelivery.id == did)).first()
            claimed.append(row)
    return claimed


def deliver_due(database, fernet, *, now: dt.datetime | None = None, limit: int = BATCH, client=None) -> dict:
    """Send what is due. Returns counts: delivered, retry (failed, will retry), failed (gave up)."""
    now = now or utcnow()
    counts = {"delivered": 0, "retry": 0, "failed": 0, "skipped": 0}
    claimed = _claim(database, now, limit)
    if not claimed:
        return counts  # the usual pump after a commit: no client (loading its CA bundle took 36 ms of CPU here)
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT, follow_redirects=False)
    try:
        for row in claimed:
            if not row.active:
                with database.session() as s:  # paused: try again later, nothing lost
                    s.execute(update(WebhookDelivery).where(WebhookDelivery.id == row.id)
                              .values(next_attempt_at=now + dt.timedelta(minutes=5)))
                counts["skipped"] += 1
                continue
            counts[_attempt(database, fernet, client, row, now)] += 1
    finally:
        if own:
            client.close()
    return counts


def _attempt(database, fernet, client, row, now: dt.datetime) -> str:
    body = row.body.encode()
    status, error = None, None
    try:
        secret = fernet.decrypt(row.secret_enc.encode())
        resp = client.post(row.url, content=body, headers=signing.headers(secret, row.event_id, row.event, body))
        status = resp.status_code
        if not 200 <= status < 300:
            error = f"receiver answered {status}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    except Exception as exc:  # a broken secret must not stop the other deliveries
        log.exception("webhook delivery %s failed unexpectedly", row.id)
        error = f"{type(exc).__name__}"
    attempts = row.attempts + 1
    done = utcnow()
    if error is None:
        values = {"status": "delivered", "delivered_at": done, "last_error": None}
        outcome = "delivered"
    elif attempts >= MAX_ATTEMPTS:
        values = {"status": "failed", "last_error": error[:300]}
        outcome = "failed"
        log.error("webhook delivery %s (%s) given up after %d attempts: %s", row.id, row.event, attempts, error)
    else:
        values = {"next_attempt_at": done + backoff(attempts), "last_error": error[:300]}
        outcome = "retry"
        log.warning("webhook delivery %s (%s) attempt %d failed: %s", row.id, row.event, attempts, error)
    with database.session() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == row.id).values(
            attempts=attempts, last_attempt_at=done, last_status=status, **values))
    return outcome


KEEP_DELIVERED = dt.timedelta(days=90)


def prune(session: Session, now: dt.datetime | None = None) -> int:
    """The delivery log keeps 90 days of delivered events; failed ones stay until retried or
    their subscriber is removed. Outbox events nobody waits for any more go with them."""
    from sqlalchemy import delete, exists

    cutoff = (now or utcnow()) - KEEP_DELIVERED
    gone = session.execute(delete(WebhookDelivery).where(WebhookDelivery.status == "delivered",
                                                         WebhookDelivery.delivered_at < cutoff)).rowcount
    session.execute(delete(OutboxEvent).where(
        OutboxEvent.dispatched_at.is_not(None), OutboxEvent.dispatched_at < cutoff,
        ~exists().where(WebhookDelivery.outbox_id == OutboxEvent.id)))
    return gone


def retry(session: Session, subscriber_id: int, delivery_ids: list[int] | None = None) -> int:
    """Failed (or waiting) deliveries are due now again, attempts counted afresh."""
    cond = [WebhookDelivery.subscriber_id == subscriber_id, WebhookDelivery.status.in_(("failed", "pending"))]
    if delivery_ids:
        cond.append(WebhookDelivery.id.in_(delivery_ids))
    return session.execute(update(WebhookDelivery).where(and_(*cond)).values(
        status="pending", attempts=0, next_attempt_at=utcnow())).rowcount


