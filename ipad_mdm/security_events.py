"""Security events: what security officers must see (takeover attempts, tampering, …).

Any package records one with `record(session, kind, …)` inside the transaction that
detected it (or a transaction of its own when the request itself is refused). Each
event is stored, logged at WARNING or above, and e-mailed through the notifier once
the transaction commits. Security officers read them in the console, the API
(`/api/v1/security-events`) and the monthly report's incident section, and
acknowledge them with a note.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import Index, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import Base, utcnow
from .notify import Notification, send_after_commit

log = logging.getLogger("ipad_mdm.security")

SEVERITIES = ("critical", "high", "warning", "info")

# kind -> (severity, Vietnamese title, English title)
KINDS: dict[str, tuple[str, str, str]] = {
    "device_takeover_attempt": ("critical", "Cố gắng chiếm quyền định danh của thiết bị đã đăng ký",
                                "Attempt to take over an enrolled device's identity"),
    "identity_mismatch": ("high", "Chứng thư số định danh thiết bị được dùng cho thiết bị khác",
                          "Device identity certificate used for another device"),
    "unauthorised_reenrollment": ("high", "Đăng ký lại thiết bị khi chưa được cho phép",
                                  "Re-enrollment of a device without authorisation"),
    "device_reenrolled": ("info", "Thiết bị được đăng ký lại theo yêu cầu của bộ phận CNTT",
                          "Device re-enrolled as authorised by IT"),
    "superseded_identity_used": ("high", "Dùng chứng thư số định danh thiết bị đã được thay thế",
                                 "A superseded device identity certificate was used"),
    "identity_renewal_refused": ("warning", "Yêu cầu gia hạn chứng thư số định danh thiết bị bị từ chối",
                                 "Device identity renewal refused"),
    "audit_chain_tampered": ("critical", "Nhật ký truy cập tài liệu bị can thiệp",
                             "Document access log has been tampered with"),
    "app_profile_expiring": ("warning", "Hồ sơ cấp phép của ứng dụng nội bộ sắp hết hạn",
                             "An in-house app's provisioning profile is about to expire"),
    "usb_token_expiring": ("warning", "Chứng thư số ký trên USB token sắp hết hạn",
                           "The signing certificate on a USB token is about to expire"),
    "usb_token_lost": ("high", "USB token ký số bị mất", "A signing USB token was lost"),
    "signing_token_unavailable": ("high", "Token lưu khóa CA hoặc khóa ký hồ sơ không sử dụng được",
                                  "The PKCS#11 token holding the CA or profile-signing key cannot be used"),
    "signing_token_restored": ("info", "Token lưu khóa CA hoặc khóa ký hồ sơ đã sử dụng lại được",
                               "The PKCS#11 token holding the CA or profile-signing key works again"),
    "push_certificate_rejected": ("critical", "Apple từ chối chứng thư số APNs: iPad không nhận được lệnh",
                                  "Apple refuses the push certificate: iPads get no commands"),
    "push_topic_mismatch": ("critical", "Chứng thư số APNs không cùng chủ đề với các iPad đã đăng ký",
                            "The push certificate's topic is not the enrolled iPads' topic"),
    "push_topic_changed": ("high", "Đã đổi chủ đề (topic) của chứng thư số APNs",
                           "The push certificate's topic was changed"),
    "push_certificate_expiring": ("warning", "Chứng thư số APNs sắp hết hạn", "The push certificate is about to expire"),
    "push_certificate_expired": ("critical", "Chứng thư số APNs đã hết hạn", "The push certificate has expired"),
    "ade_token_expiring": ("warning", "Mã thông báo máy chủ Apple Business Manager sắp hết hạn",
                           "The Apple Business Manager server token is about to expire"),
}


class SecurityEvent(Base):
    """One security event (append-only, except its acknowledgement)."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_kind_at", "kind", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(48))
    severity: Mapped[str] = mapped_column(String(16))
    # Copies, not foreign keys: the core does not know the mdm tables, and the record
    # must outlive the device row.
    udid: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    device_id: Mapped[int | None] = mapped_column(Integer, default=None)
    summary_vi: Mapped[str] = mapped_column(Text)
    summary_en: Mapped[str] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(default=dict)
    source_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), default=None)
    acknowledgement_note: Mapped[str | None] = mapped_column(Text, default=None)


def record(session: Session, kind: str, *, summary_vi: str, summary_en: str, udid: str | None = None,
           device_id: int | None = None, details: dict | None = None, source_ip: str | None = None,
           dedupe: bool = False) -> SecurityEvent | None:
    """Store a security event in the caller's transaction; notify after commit.

    dedupe: skip when an unacknowledged event of the same kind for the same device
    (and the same details["key"], if given) is already on record: one alarm, not a flood."""
    if kind not in KINDS:
        raise ValueError(f"unknown security event kind {kind}")
    details = dict(details or {})
    if dedupe:
        stmt = select(SecurityEvent).where(SecurityEvent.kind == kind, SecurityEvent.acknowledged_at.is_(None))
        stmt = stmt.where(SecurityEvent.udid == udid) if udid else stmt.where(SecurityEvent.udid.is_(None))
        for existing in session.scalars(stmt.order_by(SecurityEvent.id.desc()).limit(20)):
            if (existing.details or {}).get("key") == details.get("key"):
                return None
    severity, title_vi, title_en = KINDS[kind]
    event = SecurityEvent(at=utcnow(), kind=kind, severity=severity, udid=udid, device_id=device_id,
                          summary_vi=summary_vi, summary_en=summary_en, details=details,
                          source_ip=(source_ip or None) and source_ip[:64])
    session.add(event)
    session.flush()
    level = logging.INFO if severity == "info" else logging.WARNING if severity == "warning" else logging.ERROR
    log.log(level, "SECURITY EVENT #%d %s (%s)%s: %s", event.id, kind, severity,
            f" device {udid}" if udid else "", summary_en)
    if severity != "info":
        lines = [f"{title_vi} / {title_en}", "", summary_vi, summary_en]
        if udid:
            lines.append(f"UDID: {udid}")
        if source_ip:
            lines.append(f"Địa chỉ nguồn / Source address: {source_ip}")
        lines.append(f"Sự kiện số / Event no. {event.id}")
        send_after_commit(session, Notification(f"[iPad MDM] [{severity.upper()}] {title_vi} / {title_en}",
                                                "\n".join(lines), (), udid or "", kind))
    return event


def title(kind: str, lang: str) -> str:
    _sev, vi, en = KINDS.get(kind, ("", kind, kind))
    return en if lang == "en" else vi


def to_dict(event: SecurityEvent) -> dict:
    return {
        "id": event.id, "at": event.at.isoformat(), "kind": event.kind, "severity": event.severity,
        "title_vi": title(event.kind, "vi"), "title_en": title(event.kind, "en"),
        "udid": event.udid, "summary_vi": event.summary_vi, "summary_en": event.summary_en,
        "details": event.details or {}, "source_ip": event.source_ip,
        "acknowledged_at": event.acknowledged_at.isoformat() if event.acknowledged_at else None,
        "acknowledged_by": event.acknowledged_by, "acknowledgement_note": event.acknowledgement_note,
    }


def query(session: Session, *, limit: int, offset: int = 0, kind: str | None = None,
          open_only: bool = False, since: dt.datetime | None = None,
          until: dt.datetime | None = None) -> tuple[int, list[SecurityEvent]]:
    stmt = select(SecurityEvent)
    if kind:
        stmt = stmt.where(SecurityEvent.kind == kind)
    if open_only:
        stmt = stmt.where(SecurityEvent.acknowledged_at.is_(None))
    if since is not None:
        stmt = stmt.where(SecurityEvent.at >= since)
    if until is not None:
        stmt = stmt.where(SecurityEvent.at < until)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(SecurityEvent.id.desc()).limit(limit).offset(offset)))
    return total, rows


class EventNotFound(LookupError):
    pass


def acknowledge(session: Session, event_id: int, *, by: str, note: str = "") -> SecurityEvent:
    event = session.get(SecurityEvent, event_id)
    if event is None:
        raise EventNotFound(f"unknown security event {event_id}")
    if event.acknowledged_at is None:
        event.acknowledged_at = utcnow()
        event.acknowledged_by = by[:128]
        event.acknowledgement_note = (note or "")[:2000] or None
        log.info("security event #%d acknowledged by %s", event.id, by)
    return event


def open_count(session: Session) -> int:
    return session.scalar(select(func.count(SecurityEvent.id)).where(SecurityEvent.acknowledged_at.is_(None),
                                                                     SecurityEvent.severity != "info")) or 0
