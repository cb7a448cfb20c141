"""Notifications to people (security officers, IT): a log line always, e-mail when configured.

Used for verdict transitions (compliance) and security events (ipad_mdm.security_events).

E-mail is sent only *after* the transaction that recorded the transition commits
(an e-mail about a transition that was rolled back would be a lie) and on a
background thread, so a slow SMTP server never holds up a device's MDM session.

Configuration (environment):
  IPAD_MDM_SMTP_HOST        enables e-mail (unset: the log-only notifier)
  IPAD_MDM_SMTP_PORT        default 587
  IPAD_MDM_SMTP_STARTTLS    default true (false for a local relay on port 25)
  IPAD_MDM_SMTP_SSL         default false (implicit TLS, port 465)
  IPAD_MDM_SMTP_USER / IPAD_MDM_SMTP_PASSWORD_FILE (preferred) / IPAD_MDM_SMTP_PASSWORD
  IPAD_MDM_NOTIFY_FROM      sender address
  IPAD_MDM_NOTIFY_TO        comma-separated default recipients (security officers)

Other senders plug in with `set_notifier(obj)`; obj needs `send(Notification)`.
"""
from __future__ import annotations

import logging
import os
import smtplib
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy.orm import Session

from .db import after_commit

log = logging.getLogger("ipad_mdm.notify")


@dataclass(frozen=True)
class Notification:
    subject: str
    body: str
    recipients: tuple[str, ...] = ()
    device_udid: str = ""
    to_state: str = ""
    extra: dict = field(default_factory=dict, compare=False)


class LogNotifier:
    """Default: the log line is the notification (no e-mail infrastructure needed)."""

    def send(self, note: Notification) -> None:
        log.info("notification (no e-mail configured) to %s: %s", ",".join(note.recipients) or "-", note.subject)


class SmtpNotifier:
    def __init__(self, host: str, port: int = 587, *, starttls: bool = True, use_ssl: bool = False,
                 user: str | None = None, password: str | None = None, sender: str = "ipad-mdm@localhost",
                 default_recipients: tuple[str, ...] = (), timeout: float = 15.0):
        self.host, self.port, self.starttls, self.use_ssl = host, port, starttls, use_ssl
        self.user, self.password, self.sender = user, password, sender
        self.default_recipients = default_recipients
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compliance-smtp")

    def send(self, note: Notification) -> None:
        recipients = tuple(dict.fromkeys(note.recipients + self.default_recipients))
        if not recipients:
            log.warning("notification %r has no recipients; set IPAD_MDM_NOTIFY_TO", note.subject)
            return
        self._pool.submit(self._deliver, note, recipients)

    def _deliver(self, note: Notification, recipients: tuple[str, ...]) -> None:
        msg = EmailMessage()
        msg["Subject"] = note.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg.set_content(note.body)
        try:
            ctx = ssl.create_default_context()
            if self.use_ssl:
                client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=ctx)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.starttls and not self.use_ssl:
                    client.starttls(context=ctx)
                if self.user:
                    client.login(self.user, self.password or "")
                client.send_message(msg)
            log.info("notification e-mailed to %s: %s", ",".join(recipients), note.subject)
        except Exception:  # best effort: the transition row and log line remain the record
            log.exception("sending notification e-mail %r failed", note.subject)


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw in (None, "") else raw.strip().lower() in ("1", "true", "yes", "on")


def notifier_from_env():
    host = os.environ.get("IPAD_MDM_SMTP_HOST")
    if not host:
        return LogNotifier()
    password = os.environ.get("IPAD_MDM_SMTP_PASSWORD")
    if os.environ.get("IPAD_MDM_SMTP_PASSWORD_FILE"):
        password = Path(os.environ["IPAD_MDM_SMTP_PASSWORD_FILE"]).read_text().strip()
    recipients = tuple(r.strip() for r in os.environ.get("IPAD_MDM_NOTIFY_TO", "").split(",") if r.strip())
    return SmtpNotifier(
        host, int(os.environ.get("IPAD_MDM_SMTP_PORT") or 587),
        starttls=_env_bool("IPAD_MDM_SMTP_STARTTLS", True), use_ssl=_env_bool("IPAD_MDM_SMTP_SSL", False),
        user=os.environ.get("IPAD_MDM_SMTP_USER") or None, password=password,
        sender=os.environ.get("IPAD_MDM_NOTIFY_FROM") or "ipad-mdm@localhost", default_recipients=recipients,
    )


_lock = threading.Lock()
_notifier = None


def get_notifier():
    global _notifier
    with _lock:
        if _notifier is None:
            _notifier = notifier_from_env()
        return _notifier


def set_notifier(notifier) -> None:
    """Plug in another sender (tests, a chat bridge...); None re-reads the environment."""
    global _notifier
    with _lock:
        _notifier = notifier


def send_after_commit(session: Session, note: Notification) -> None:
    """Deliver `note` once `session` commits; drop it if the session rolls back
    (an e-mail about something that was rolled back would be a lie)."""
    after_commit(session, lambda: _deliver(note))


def _deliver(note: Notification) -> None:
    try:
        get_notifier().send(note)
    except Exception:
        log.exception("notifier failed for %r", note.subject)
