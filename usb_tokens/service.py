"""The USB token registry's rules: a token's states, its certificate, who holds it.

    in_stock ──hand_over──▶ handed_over ──return──▶ returned ──hand_over──▶ handed_over
    in_stock | handed_over | returned ──lost──▶ lost ──revoked──▶ revoked
    in_stock | handed_over | returned ──revoked──▶ revoked        (the CA revoked it for another reason)

A loss is one action: the token leaves its holder, a security event is raised for the security
officers, and the certificate revocation request to the issuing CA is numbered from its own yearly
register and printed from the event's snapshot (usb_tokens.letter). Every change writes an event.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipad_mdm import security_events
from ipad_mdm.db import utcnow
from ipad_mdm.decree30 import LOCAL_TZ
from ipad_mdm.refusal import Refusal
from ipad_mdm.timefmt import days_until

from .models import UsbToken, UsbTokenEvent

log = logging.getLogger("usb_tokens")

STATES = ("in_stock", "handed_over", "returned", "lost", "revoked")
HELD = ("in_stock", "handed_over", "returned")  # the token is still ours to account for
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "hand_over": (("in_stock", "returned"), "handed_over"),
    "return": (("handed_over",), "returned"),
    "lost": (HELD, "lost"),
    "revoked": (HELD + ("lost",), "revoked"),
}
STATE_LABELS = {
    "in_stock": ("Trong kho", "In stock"),
    "handed_over": ("Đã bàn giao", "Handed over"),
    "returned": ("Đã hoàn trả", "Returned"),
    "lost": ("Bị mất", "Lost"),
    "revoked": ("Chứng thư số đã bị thu hồi", "Certificate revoked"),
}
ACTION_LABELS = {
    "registered": ("Nhập vào danh sách quản lý", "Registered"),
    "certificate": ("Cập nhật chứng thư số ký", "Signing certificate loaded"),
    "hand_over": ("Bàn giao cho lãnh đạo", "Handed over to a leader"),
    "return": ("Nhận hoàn trả", "Returned"),
    "lost": ("Báo mất, đề nghị thu hồi chứng thư số", "Reported lost, revocation requested"),
    "revoked": ("Xác nhận chứng thư số đã bị thu hồi", "Certificate revocation confirmed"),
}
SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")
MAX_CERTIFICATE = 64 * 1024
EXPIRY_THRESHOLDS = (30, 14, 7, 0)


class TokenRefused(Refusal):
    """Bad input or an action the token's state does not allow; the message is for the user."""

    def __init__(self, message_vi: str, message_en: str):
        super().__init__(message_en, message_vi)


def allowed_actions(state: str) -> list[str]:
    return [a for a, (sources, _) in TRANSITIONS.items() if state in sources]


# ------------------------------------------------------------------ certificates
def _name_part(name: x509.Name, *oids) -> str:
    for oid in oids:
        values = name.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return ""


def certificate_facts(data: bytes) -> dict:
    """What the registry keeps of a signing certificate (PEM or DER, a .cer/.crt file or what a
    token returned). A file holding a private key is refused outright: it must never be uploaded."""
    if not data:
        raise TokenRefused("Tệp chứng thư số trống.", "The certificate file is empty.")
    if len(data) > MAX_CERTIFICATE:
        raise TokenRefused("Tệp chứng thư số quá lớn (tối đa 64 KB).", "The certificate file is too large (64 KB at most).")
    if b"PRIVATE KEY" in data:
        raise TokenRefused("Tệp có chứa khóa bí mật: không được tải khóa bí mật lên hệ thống. Vui lòng chỉ tải "
                           "tệp chứng thư số (.cer, .crt, .pem).",
                           "The file holds a private key, which must never be uploaded. Upload the certificate only.")
    try:
        cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN CERTIFICATE" in data
                else x509.load_der_x509_certificate(data))
    except ValueError:
        raise TokenRefused("Không đọc được tệp chứng thư số (cần định dạng X.509 PEM hoặc DER).",
                           "Not an X.509 certificate (PEM or DER).") from None
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise TokenRefused("Đây là chứng thư số của tổ chức cung cấp dịch vụ (CA), không phải chứng thư số ký "
                               "của người dùng.", "This is a CA certificate, not a signer's certificate.")
    except x509.ExtensionNotFound:
        pass
    der = cert.public_bytes(serialization.Encoding.DER)
    return {
        "subject": cert.subject.rfc4514_string()[:1024],
        "holder_name": _name_part(cert.subject, NameOID.COMMON_NAME)[:255],
        "issuer": cert.issuer.rfc4514_string()[:1024],
        "issuer_name": _name_part(cert.issuer, NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME)[:255],
        "serial": format(cert.serial_number, "X"),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "sha256": hashlib.sha256(der).hexdigest(),
        "der": der,
    }


def signing_certificate(ders: list[bytes]) -> bytes:
    """Of the certificates a token holds (often with its CA chain), the signer's: an end-entity
    certificate for signing (digitalSignature or nonRepudiation, or document signing/e-mail use),
    the one valid longest."""
    candidates = []
    for der in ders:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                continue
        except x509.ExtensionNotFound:
            pass
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            if not (ku.digital_signature or ku.content_commitment):
                continue
        except x509.ExtensionNotFound:
            pass
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
                continue
        except x509.ExtensionNotFound:
            pass
        candidates.append((cert.not_valid_after_utc, der))
    if not candidates:
        raise TokenRefused("Trên USB token không có chứng thư số ký của người dùng.",
                           "The token holds no signer's certificate.")
    return max(candidates)[1]


def _apply_certificate(token: UsbToken, facts: dict, source: str) -> None:
    token.cert_subject, token.cert_holder_name = facts["subject"], facts["holder_name"]
    token.cert_issuer, token.cert_issuer_name = facts["issuer"], facts["issuer_name"]
    token.cert_serial, token.cert_sha256, token.cert_der = facts["serial"], facts["sha256"], facts["der"]
    token.cert_not_before, token.cert_not_after = facts["not_before"], facts["not_after"]
    token.cert_source = source
    token.expiry_warned = None  # a new certificate: its warnings start over


# ------------------------------------------------------------------ the registry
def _event(session: Session, token: UsbToken, action: str, *, by: str, to_state: str | None = None,
           note: str = "", leader_id: int | None = None, data: dict | None = None) -> UsbTokenEvent:
    event = UsbTokenEvent(token_id=token.id, action=action, from_state=token.state, to_state=to_state or token.state,
                          at=utcnow(), by=by[:128], note=(note or "")[:4000], leader_id=leader_id, data=data)
    token.state, token.updated_at = event.to_state, event.at
    session.add(event)
    session.flush()
    log.info("usb token %s: %s %s -> %s by %s", token.serial_number, action, event.from_state, event.to_state, by)
    return event


def _transition(session: Session, token: UsbToken, action: str, **kwargs) -> UsbTokenEvent:
    sources, target = TRANSITIONS[action]
    if token.state not in sources:
        nxt = allowed_actions(token.state)
        raise TokenRefused(
            f"Không thể “{ACTION_LABELS[action][0]}” khi USB token ở trạng thái “{STATE_LABELS[token.state][0]}”. "
            f"Các bước được phép: {', '.join(ACTION_LABELS[a][0] for a in nxt) or 'không có'}.",
            f"Cannot “{ACTION_LABELS[action][1]}” while the token is “{STATE_LABELS[token.state][1]}”. "
            f"Allowed: {', '.join(ACTION_LABELS[a][1] for a in nxt) or 'none'}.")
    return _event(session, token, action, to_state=target, **kwargs)


def get(session: Session, token_id_or_serial) -> UsbToken | None:
    if isinstance(token_id_or_serial, int):
        return session.get(UsbToken, token_id_or_serial)
    return session.scalar(select(UsbToken).where(UsbToken.serial_number == str(token_id_or_serial).strip()))


def register(session: Session, *, serial_number: str, kind: str = "", certificate: bytes | None = None,
             source: str = "file", unit_id: int | None = None, by: str, note: str = "") -> UsbToken:
    serial = (serial_number or "").strip()
    if not SERIAL_RE.match(serial):
        raise TokenRefused("Số sê-ri USB token gồm 3–64 ký tự: chữ cái không dấu, chữ số, dấu chấm, gạch ngang.",
                           "A token serial has 3-64 letters, digits, dots, dashes or underscores.")
    if get(session, serial) is not None:
        raise TokenRefused(f"USB token số sê-ri {serial} đã có trong danh sách quản lý.",
                           f"Token {serial} is already registered.")
    facts = certificate_facts(certificate) if certificate else None
    if facts and session.scalar(select(UsbToken.id).where(UsbToken.cert_sha256 == facts["sha256"])) is not None:
        raise TokenRefused("Chứng thư số này đã gắn với một USB token khác trong danh sách.",
                           "This certificate already belongs to another registered token.")
    token = UsbToken(serial_number=serial, kind=(kind or "").strip()[:128], unit_id=unit_id, created_by=by[:128],
                     note=(note or "")[:4000], state="in_stock")
    if facts:
        _apply_certificate(token, facts, source)
    session.add(token)
    session.flush()
    _event(session, token, "registered", by=by, data=_cert_data(token))
    return token


def load_certificate(session: Session, token: UsbToken, certificate: bytes, *, source: str = "file",
                     by: str) -> UsbTokenEvent:
    """A renewed certificate on the same token (the CA re-issues onto it): the expiry warnings start over."""
    if token.state not in HELD:
        raise TokenRefused("USB token đã bị mất hoặc chứng thư số đã bị thu hồi: không cập nhật chứng thư.",
                           "The token is lost or revoked: no certificate can be loaded onto it.")
    facts = certificate_facts(certificate)
    _apply_certificate(token, facts, source)
    return _event(session, token, "certificate", by=by, data=_cert_data(token))


def _cert_data(token: UsbToken) -> dict:
    return {"cert_serial": token.cert_serial, "holder_name": token.cert_holder_name,
            "issuer_name": token.cert_issuer_name,
            "not_after": token.cert_not_after.isoformat() if token.cert_not_after else None}


def snapshot(token: UsbToken) -> dict:
    """What a handover minute prints of a token, frozen at that moment."""
    return {"id": token.id, "serial_number": token.serial_number, "kind": token.kind, **_cert_data(token)}


def hand_over(session: Session, token: UsbToken, leader, *, by: str, minute: str = "", note: str = "") -> UsbTokenEvent:
    if token.state in TRANSITIONS["hand_over"][0] and token.cert_not_after is not None and token.cert_not_after <= utcnow():
        raise TokenRefused("Chứng thư số trên USB token đã hết hạn: không bàn giao.",
                           "The token's certificate has expired: it cannot be handed over.")
    event = _transition(session, token, "hand_over", by=by, note=note, leader_id=leader.id,
                        data={"leader": leader.full_name, "minute": minute})
    token.holder_leader_id = leader.id
    return event


def return_token(session: Session, token: UsbToken, *, by: str, minute: str = "", note: str = "") -> UsbTokenEvent:
    event = _transition(session, token, "return", by=by, note=note, leader_id=token.holder_leader_id,
                        data={"minute": minute})
    token.holder_leader_id = None
    return event


def report_lost(session: Session, token: UsbToken, *, by: str, by_name: str = "", circumstances: str,
                lost_on: dt.date | None = None, holder_name: str = "") -> UsbTokenEvent:
    """One action: the loss recorded, a security event raised, the revocation request numbered."""
    circumstances = (circumstances or "").strip()
    if not circumstances:
        raise TokenRefused("Vui lòng ghi rõ hoàn cảnh mất USB token.", "Describe how the token was lost.")
    today = utcnow().astimezone(LOCAL_TZ).date()
    lost_on = lost_on or today
    if lost_on > today:
        raise TokenRefused("Ngày mất không được sau ngày hôm nay.", "The date of the loss cannot be in the future.")
    holder = holder_name or token.cert_holder_name
    event = _transition(session, token, "lost", by=by, note=circumstances, leader_id=token.holder_leader_id,
                        data={**snapshot(token), "cert_subject": token.cert_subject, "cert_issuer": token.cert_issuer,
                              "holder": holder, "lost_on": lost_on.isoformat(), "circumstances": circumstances[:2000],
                              "reported_by": by_name or by, "at": utcnow().isoformat()})
    token.lost_at = event.at
    _number_letter(session, event)
    security_events.record(
        session, "usb_token_lost",
        summary_vi=(f"USB token ký số {token.serial_number} ({holder or 'chưa rõ người được cấp'}) bị mất ngày "
                    f"{lost_on:%d/%m/%Y}. Đã lập công văn số {event.letter_number}/TTTH-ATTT đề nghị tổ chức cung cấp "
                    f"dịch vụ chứng thực chữ ký số thu hồi chứng thư số {token.cert_serial or '(chưa có)'}."),
        summary_en=(f"Signing USB token {token.serial_number} ({holder or 'holder unknown'}) lost on {lost_on:%d/%m/%Y}. "
                    f"Revocation request no. {event.letter_number}/TTTH-ATTT for certificate "
                    f"{token.cert_serial or '(none)'} drawn up for the issuing CA."),
        details={"key": token.serial_number, "usb_token": token.serial_number, "cert_serial": token.cert_serial})
    return event


def _number_letter(session: Session, event: UsbTokenEvent) -> None:
    """The revocation request's number: this year's next in the token letters' register."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(0x55534254)))  # two losses at once: one waits
    year = event.at.astimezone(LOCAL_TZ).year
    last = session.scalar(select(func.max(UsbTokenEvent.letter_number)).where(UsbTokenEvent.letter_year == year))
    event.letter_year, event.letter_number = year, (last or 0) + 1
    event.data = {**(event.data or {}), "number": event.letter_number}
    session.flush()


def mark_revoked(session: Session, token: UsbToken, *, by: str, note: str = "") -> UsbTokenEvent:
    """The issuing CA confirmed the revocation (its notice, or the certificate on its CRL)."""
    event = _transition(session, token, "revoked", by=by, note=note, leader_id=token.holder_leader_id)
    token.revoked_at, token.holder_leader_id = event.at, None
    return event


def held_by(session: Session, leader_id: int) -> list[UsbToken]:
    return list(session.scalars(select(UsbToken).where(UsbToken.holder_leader_id == leader_id,
                                                       UsbToken.state == "handed_over").order_by(UsbToken.serial_number)))


def available(session: Session) -> list[UsbToken]:
    """Tokens that may go out with an iPad: in stock or returned, certificate not expired."""
    now = utcnow()
    return list(session.scalars(select(UsbToken).where(
        UsbToken.state.in_(TRANSITIONS["hand_over"][0]),
        (UsbToken.cert_not_after.is_(None)) | (UsbToken.cert_not_after > now)).order_by(UsbToken.serial_number)))


def expiring_condition(now: dt.datetime, days: int = 30):
    return (UsbToken.state.in_(HELD)) & UsbToken.cert_not_after.is_not(None) & \
        (UsbToken.cert_not_after <= now + dt.timedelta(days=days))


def days_left(token: UsbToken, now: dt.datetime) -> int | None:
    if token.cert_not_after is None:
        return None
    return days_until(token.cert_not_after, now)


def warn_expiring(session: Session, now: dt.datetime | None = None) -> list[str]:
    """One security event per token and threshold crossed (30, 14, 7 days ahead, and expired)."""
    now = now or utcnow()
    warned = []
    for token in session.scalars(select(UsbToken).where(expiring_condition(now, max(EXPIRY_THRESHOLDS)))):
        days = days_left(token, now)
        threshold = min(t for t in EXPIRY_THRESHOLDS if days <= t)
        if token.expiry_warned is not None and token.expiry_warned <= threshold:
            continue  # said already (kept on the row: any number of tokens may expire together)
        token.expiry_warned = threshold
        key = f"{token.serial_number}:{token.cert_serial}:{threshold}"
        when = token.cert_not_after.astimezone(LOCAL_TZ)
        who = token.cert_holder_name or token.serial_number
        if days > 0:
            vi = (f"Chứng thư số ký trên USB token {token.serial_number} ({who}) hết hạn ngày {when:%d/%m/%Y} "
                  f"(còn {days} ngày). Đề nghị làm thủ tục gia hạn với tổ chức cung cấp dịch vụ trước ngày này.")
            en = (f"The signing certificate on USB token {token.serial_number} ({who}) expires on {when:%d %b %Y} "
                  f"({days} days left). Request its renewal from the issuing CA before then.")
        else:
            vi = (f"Chứng thư số ký trên USB token {token.serial_number} ({who}) đã hết hạn ngày {when:%d/%m/%Y}: "
                  f"không ký số được. Đề nghị gia hạn ngay.")
            en = (f"The signing certificate on USB token {token.serial_number} ({who}) expired on {when:%d %b %Y}: "
                  f"it can no longer sign. Renew it now.")
        security_events.record(session, "usb_token_expiring", summary_vi=vi, summary_en=en,
                               details={"key": key, "usb_token": token.serial_number, "days_left": days,
                                        "threshold": threshold})
        warned.append(key)
    return warned


def token_dict(token: UsbToken, now: dt.datetime | None = None) -> dict:
    """A token as the CLI and API show it (the certificate's facts, not the certificate itself)."""
    now = now or utcnow()
    return {"id": token.id, "serial_number": token.serial_number, "kind": token.kind, "state": token.state,
            "holder_leader_id": token.holder_leader_id, "unit_id": token.unit_id,
            "certificate": None if not token.cert_sha256 else {
                "holder_name": token.cert_holder_name, "subject": token.cert_subject,
                "issuer": token.cert_issuer, "serial": token.cert_serial, "sha256": token.cert_sha256,
                "not_before": token.cert_not_before.isoformat() if token.cert_not_before else None,
                "not_after": token.cert_not_after.isoformat() if token.cert_not_after else None,
                "days_left": days_left(token, now), "source": token.cert_source},
            "lost_at": token.lost_at.isoformat() if token.lost_at else None,
            "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None}
