"""The push certificate in service: which one is in use (re-read when its file changes, so every
process picks up a renewal without a restart), installing a new one with the topic guard, what APNs
answers say about it, and the expiry warnings."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipad_mdm import security_events
from ipad_mdm.db import utcnow
from ipad_mdm.dispatch import push_after_commit
from ipad_mdm.files import write_atomic
from ipad_mdm.timefmt import local_date

from ..models import Device
from .certificate import PushCertificate, check_topic, describe, validate_pair, warning_due
from .models import PushServiceState

log = logging.getLogger("mdm.pushcert")
PROBE_AFTER_SECONDS = 3600  # a refused certificate is tried again (one batch) this long after
_cache: dict[str, tuple[tuple, PushCertificate]] = {}
_cache_lock = threading.Lock()


def paths(inst) -> tuple[Path, Path]:
    return Path(inst.push_cert_path), Path(inst.push_key_path)


def current(inst) -> PushCertificate:
    """The certificate in use now, read again whenever its file changed (renewed by another process)."""
    cert_path = paths(inst)[0]
    st = cert_path.stat()
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _cache_lock:
        hit = _cache.get(str(cert_path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
    info = describe(x509.load_pem_x509_certificate(cert_path.read_bytes()), inst.settings.push_topic)
    with _cache_lock:
        _cache[str(cert_path)] = (stamp, info)
    if info.topic and info.topic != inst.push_topic:
        inst.push_topic = info.topic  # new enrollment profiles name the certificate's topic
    return info


def state(session: Session, *, lock: bool = False) -> PushServiceState:
    stmt = select(PushServiceState).where(PushServiceState.id == 1)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        row = PushServiceState(id=1, state="ok")
        session.add(row)
        session.flush()
    return row


def enrolled_topics(session: Session) -> dict[str, int]:
    rows = session.execute(select(Device.topic, func.count(Device.id))
                           .where(Device.enrollment_state == "enrolled", Device.topic.is_not(None))
                           .group_by(Device.topic)).all()
    return {topic: n for topic, n in rows}


def blocked(session: Session, info: PushCertificate) -> str | None:
    """Why no push should be sent with this certificate now (no network), or None."""
    now = utcnow()
    if info.expired(now):
        return "expired"
    row = session.scalar(select(PushServiceState).where(PushServiceState.id == 1))
    if (row is not None and row.state == "certificate_rejected" and row.fingerprint == info.fingerprint
            and row.since is not None and (now - row.since).total_seconds() < PROBE_AFTER_SECONDS):
        return "certificate_rejected"
    return None


def record_success(session: Session, info: PushCertificate) -> None:
    row = state(session)
    now = utcnow()
    if row.state != "ok" and row.fingerprint == info.fingerprint:
        log.warning("APNs accepts the push certificate again (was %s: %s)", row.state, row.reason)
        row.state, row.reason, row.since = "ok", None, now
    if row.last_success_at is None or (now - row.last_success_at).total_seconds() > 60:
        row.last_success_at = now  # coalesced: one write a minute at most


def record_refusal(session: Session, info: PushCertificate, kind: str, reason: str) -> None:
    """APNs refused the certificate (kind "certificate") or a device token belongs to another topic
    (kind "topic"): every process stops or is warned, and the security officers are told once."""
    row = state(session, lock=True)
    now = utcnow()
    new_state = "certificate_rejected" if kind == "certificate" else "topic_mismatch"
    row.last_failure_at = now
    if row.state == new_state and row.fingerprint == info.fingerprint:
        row.since = now if kind == "certificate" else row.since  # the next probe waits again
        return
    row.state, row.reason, row.fingerprint, row.since = new_state, (reason or "")[:128], info.fingerprint, now
    log.error("APNs refuses pushes with the certificate for topic %s: %s (%s)", info.topic, reason, new_state)
    day = local_date(info.not_after)
    if kind == "certificate":
        security_events.record(
            session, "push_certificate_rejected", details={"key": info.fingerprint, "reason": reason,
                                                            "topic": info.topic},
            summary_vi=f"Máy chủ thông báo đẩy của Apple (APNs) từ chối chứng thư số APNs (chủ đề {info.topic}, hết hạn "
                       f"ngày {day}; lý do: {reason}). Các iPad không nhận được lệnh cho đến khi chứng thư số được gia "
                       "hạn. Đề nghị gia hạn (Renew) chứng thư số trên Apple Push Certificates Portal và cài đặt lại.",
            summary_en=f"Apple's push service (APNs) refuses the push certificate (topic {info.topic}, expires {day}; "
                       f"reason: {reason}). iPads get no commands until it is renewed: renew it in the Apple Push "
                       "Certificates Portal and install it.", dedupe=True)
    else:
        security_events.record(
            session, "push_topic_mismatch", details={"key": info.fingerprint, "reason": reason, "topic": info.topic},
            summary_vi=f"APNs báo mã thiết bị không thuộc chủ đề {info.topic} của chứng thư số đang dùng ({reason}): "
                       "chứng thư số có thể đã được tạo mới thay vì gia hạn. Các iPad đăng ký với chủ đề cũ không "
                       "nhận được lệnh. Đề nghị cài lại chứng thư số gia hạn từ chứng thư số cũ.",
            summary_en=f"APNs says device tokens do not belong to the topic {info.topic} of the certificate in use "
                       f"({reason}): the certificate was probably created new instead of renewed. iPads enrolled "
                       "with the old topic get no commands; install a renewal of the old certificate.", dedupe=True)


def install(session: Session, inst, cert_pem: bytes, key_pem: bytes, *, confirm_topic_change: bool = False,
            by: str = "") -> dict:
    """Validate and install a push certificate (renewal or replacement). Refused, with nothing written,
    when the topic differs from the enrolled iPads' unless confirmed (they would all need enrolling
    again). Returns the new certificate's description and the iPads a confirmed change leaves behind."""
    now = utcnow()
    _cert, info = validate_pair(cert_pem, key_pem, now)
    left_behind = check_topic(info.topic, enrolled_topics(session), confirmed=confirm_topic_change)
    cert_path, key_path = paths(inst)
    old = current(inst)
    # Key first: a process that sees the new certificate must find its key (both atomic renames).
    write_atomic(key_path, key_pem)  # 0600 from the first byte
    write_atomic(cert_path, cert_pem)
    row = state(session, lock=True)
    row.state, row.reason, row.fingerprint, row.since = "ok", None, info.fingerprint, now
    row.installed_at, row.installed_by = now, by[:128]
    new = current(inst)
    day = local_date(new.not_after)
    if left_behind:
        count = sum(left_behind.values())
        security_events.record(
            session, "push_topic_changed", details={"key": info.fingerprint, "old_topics": sorted(left_behind),
                                                     "topic": info.topic, "devices": count, "by": by},
            summary_vi=f"Đã cài chứng thư số APNs với chủ đề mới {info.topic} (người thực hiện: {by}); {count} iPad "
                       "đăng ký với chủ đề cũ sẽ không nhận được lệnh cho đến khi được đăng ký lại.",
            summary_en=f"A push certificate with a new topic {info.topic} was installed by {by}; {count} iPad(s) "
                       "enrolled with the old topic get no commands until they are enrolled again.")
    log.warning("push certificate installed by %s: topic %s, expires %s (was %s, expiring %s)", by, new.topic,
                new.not_after.date(), old.topic, old.not_after.date())
    return {"certificate": new.to_dict(now), "replaced_fingerprint": old.fingerprint,
            "topic_changed": old.topic != new.topic, "devices_left_behind": sum(left_behind.values()),
            "expires_on": day}


def expiry_warning(session: Session, inst) -> dict | None:
    """Warn 30, 14 and 7 days before the push certificate expires, and when it has (once each)."""
    now = utcnow()
    info = current(inst)
    if info.self_signed:
        return None  # the demo's stand-in: nothing to renew at Apple
    row = state(session, lock=True)
    warned = row.warned_days if row.warned_fingerprint == info.fingerprint else None
    threshold = warning_due(info, now, warned)
    if threshold is None:
        return None
    row.warned_fingerprint, row.warned_days = info.fingerprint, threshold
    day = local_date(info.not_after)
    left = max(info.days_left(now), 0)
    kind = "push_certificate_expired" if info.expired(now) else "push_certificate_expiring"
    security_events.record(
        session, kind, details={"key": f"{info.fingerprint}:{threshold}", "days_left": left, "topic": info.topic},
        summary_vi=(f"Chứng thư số APNs (chủ đề {info.topic}) đã hết hạn ngày {day}: các iPad không nhận được lệnh. "
                    if info.expired(now) else
                    f"Chứng thư số APNs (chủ đề {info.topic}) hết hạn ngày {day} (còn {left} ngày). ")
                   + "Đề nghị gia hạn (Renew, không tạo mới) trên Apple Push Certificates Portal bằng đúng Apple ID "
                     "đã tạo và cài đặt lên hệ thống.",
        summary_en=(f"The push certificate (topic {info.topic}) expired on {day}: iPads get no commands. "
                    if info.expired(now) else
                    f"The push certificate (topic {info.topic}) expires on {day} ({left} days left). ")
                   + "Renew it (Renew, not Create) in the Apple Push Certificates Portal with the same Apple ID "
                     "and install it.")
    return {"threshold": threshold, "days_left": left}


def status(session: Session, inst) -> dict:
    """What the console and the API show about pushes."""
    now = utcnow()
    info = current(inst)
    row = session.scalar(select(PushServiceState).where(PushServiceState.id == 1))
    topics = enrolled_topics(session)
    pending = session.scalar(select(func.count(Device.id)).where(
        Device.push_pending.is_(True), Device.enrollment_state == "enrolled")) or 0
    current_state = blocked(session, info) or (row.state if row is not None and row.fingerprint == info.fingerprint
                                                else "ok")
    demo = bool(inst.pushes_off_reason)
    if current_state == "ok" and demo:
        current_state = "off_demo"  # nothing is pushed: "working" would mislead
    elif current_state == "ok" and info.days_left(now) <= 30 and not info.self_signed:
        current_state = "expiring"
    return {
        "state": current_state,
        "reason": row.reason if row is not None and current_state not in ("ok", "off_demo") else None,
        "since": row.since.isoformat() if row is not None and row.since and current_state not in ("ok", "off_demo")
        else None,
        "certificate": info.to_dict(now), "demo": demo,
        "last_success_at": row.last_success_at.isoformat() if row is not None and row.last_success_at else None,
        "last_failure_at": row.last_failure_at.isoformat() if row is not None and row.last_failure_at else None,
        "pending_pushes": pending, "enrolled_by_topic": topics,
        "enrolled_other_topic": sum(n for t, n in topics.items() if t != info.topic),
        "installed_at": row.installed_at.isoformat() if row is not None and row.installed_at else None,
        "installed_by": row.installed_by if row is not None else None,
    }


def install_and_wake(session, inst, cert_pem: bytes, key_pem: bytes, *, confirm: bool, by: str) -> dict:
    """Install, then push (after commit) every iPad whose push waited for a working certificate."""
    out = install(session, inst, cert_pem, key_pem, confirm_topic_change=confirm, by=by)
    waiting = list(session.scalars(select(Device.id).where(Device.push_pending.is_(True),
                                                           Device.enrollment_state == "enrolled")))
    push_after_commit(session, waiting)
    out["pushes_resumed"] = len(waiting)
    return out
