"""Events for the outside world, written in the transaction that made them true (a transactional outbox).

Any package says what happened, where it happens: `publish(session, "identity.revoked", {...})`.
The row commits or rolls back with the change itself, so an event is never announced for
something the database did not keep, and never lost because a broker or a receiver was down.
After commit the dispatcher is asked to run OUTBOX_TASK (whoever registered it: the webhooks
package fans events out to its subscribers and delivers them); a periodic job does the same for
events whose submission was lost.

Event data names devices by UDID and serial number, never by internal id, and carries no secret.
"""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import Base, after_commit_once, json_dumps, utcnow

OUTBOX_TASK = "outbox.pump"

# The events and what their data holds (README "Events out" lists them for receivers).
EVENTS = (
    "device.enrolled",       # udid, serial_number
    "device.unenrolled",     # udid, serial_number: the MDM profile was removed (CheckOut)
    "device.retired",        # udid, serial_number
    "device.lost",           # udid, serial_number, requested_by: Lost Mode was asked for
    "device.found",          # udid, serial_number, requested_by: Lost Mode was lifted
    "verdict.changed",       # udid, serial_number, previous, state, document_access, reasons
    "identity.revoked",      # udid, serial_number, certificate_serial, reason
    "handover.changed",      # udid, serial_number, action, from_state, to_state, leader_id, by
)


class OutboxEvent(Base):
    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_pending", "dispatched_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event: Mapped[str] = mapped_column(String(48))
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The exact JSON body every receiver gets (signatures cover these bytes).
    body: Mapped[str] = mapped_column(Text)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(default=None)


def publish(session: Session, event: str, data: dict) -> OutboxEvent:
    if event not in EVENTS:
        raise ValueError(f"unknown outbox event {event}")
    now = utcnow()
    event_id = str(uuid.uuid4())
    body = json_dumps({"id": event_id, "type": event,
                       "occurred_at": now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "data": data})
    row = OutboxEvent(event_id=event_id, event=event, occurred_at=now, body=body)
    session.add(row)
    dispatcher = session.info.get("dispatcher")
    # One request per transaction; forgotten with it if it rolls back.
    if dispatcher is not None:
        def pump():
            try:
                dispatcher.submit(OUTBOX_TASK)
            except LookupError:
                pass  # nobody consumes events in this process (a package left out): the rows wait

        after_commit_once(session, "outbox.transaction", pump)  # a pump reads what committed
    return row
