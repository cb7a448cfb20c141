"""The APNs push certificate, as data: what it says (topic, validity), whether a certificate and key
the operator hands in belong together, and what an APNs answer says about the certificate rather than
about one device. Pure: no database, no Flask."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ipad_mdm.refusal import Refusal
from ipad_mdm.timefmt import warning_threshold

# Reasons with which APNs refuses the provider (certificate revoked, expired, wrong environment), not a
# device: every push with this certificate will fail the same way until it is replaced.
CERTIFICATE_REASONS = frozenset({"BadCertificate", "BadCertificateEnvironment", "ExpiredProviderToken",
                                 "InvalidProviderToken", "MissingProviderToken", "Forbidden",
                                 "CertificateExpired", "CertificateRevoked"})
# The device token was issued for another topic: the certificate is not the one the iPads enrolled with
# (a push certificate created "new" instead of renewed).
TOPIC_REASONS = frozenset({"DeviceTokenNotForTopic", "TopicDisallowed", "BadTopic"})
WARN_DAYS = (30, 14, 7)
MDM_TOPIC_PREFIX = "com.apple.mgmt."


class PushCertificateRefused(Refusal):
    """A push certificate that cannot be installed (unreadable, key mismatch, expired, no MDM topic)."""


class TopicChangeRefused(PushCertificateRefused):
    """The new certificate's topic differs from the enrolled iPads' and the change was not confirmed."""

    def __init__(self, message: str, vi: str, *, enrolled: dict[str, int], new_topic: str):
        super().__init__(message, vi)
        self.enrolled, self.new_topic = enrolled, new_topic


@dataclass(frozen=True)
class PushCertificate:
    topic: str | None
    not_before: dt.datetime
    not_after: dt.datetime
    serial_hex: str
    fingerprint: str  # SHA-256 of the DER certificate, hex
    subject_cn: str
    issuer_cn: str
    self_signed: bool

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now).days

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.not_after

    def to_dict(self, now: dt.datetime) -> dict:
        return {"topic": self.topic, "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat(), "days_left": self.days_left(now),
                "serial": self.serial_hex, "fingerprint_sha256": self.fingerprint, "subject": self.subject_cn,
                "issuer": self.issuer_cn, "self_signed": self.self_signed, "expired": self.expired(now)}


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def topic_of(cert: x509.Certificate) -> str | None:
    """Apple puts the MDM topic in the subject's UID attribute."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(attrs[0].value) if attrs else None


def describe(cert: x509.Certificate, topic_override: str | None = None) -> PushCertificate:
    return PushCertificate(
        topic=topic_override or topic_of(cert), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, serial_hex=format(cert.serial_number, "x"),
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        subject_cn=_cn(cert.subject), issuer_cn=_cn(cert.issuer), self_signed=cert.issuer == cert.subject)


def validate_pair(cert_pem: bytes, key_pem: bytes, now: dt.datetime) -> tuple[x509.Certificate, PushCertificate]:
    """The certificate Apple issued (PEM) and the key it was requested with (PEM, unencrypted)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise PushCertificateRefused("the push certificate is not a PEM certificate",
                                     "Tệp chứng thư số APNs không đúng định dạng PEM.") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PushCertificateRefused("the private key is not an unencrypted PEM key",
                                     "Tệp khóa bí mật không đúng định dạng PEM hoặc đang được đặt mật khẩu.") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise PushCertificateRefused("the private key does not belong to this certificate",
                                     "Khóa bí mật không khớp với chứng thư số APNs này.")
    info = describe(cert)
    if not info.topic or not info.topic.startswith(MDM_TOPIC_PREFIX):
        raise PushCertificateRefused(
            f"this is not an MDM push certificate (its topic is {info.topic!r}, not {MDM_TOPIC_PREFIX}…)",
            "Đây không phải chứng thư số APNs dành cho quản lý thiết bị (MDM).")
    if info.expired(now):
        raise PushCertificateRefused("the push certificate has expired", "Chứng thư số APNs này đã hết hạn.")
    if now < info.not_before:
        raise PushCertificateRefused("the push certificate is not valid yet", "Chứng thư số APNs này chưa có hiệu lực.")
    return cert, info


def check_topic(new_topic: str, enrolled: dict[str, int], *, confirmed: bool) -> dict[str, int]:
    """The enrolled iPads whose topic differs from `new_topic` (they would stop receiving pushes and
    have to be enrolled again); refused unless the change is confirmed."""
    others = {t: n for t, n in enrolled.items() if t and t != new_topic}
    if others and not confirmed:
        count = sum(others.values())
        old = ", ".join(sorted(others))
        raise TopicChangeRefused(
            f"the new certificate's topic {new_topic} differs from the topic {old} that {count} enrolled iPad(s) "
            "use: they would no longer receive pushes and would have to be enrolled again. Renew the existing "
            "certificate in the Apple Push Certificates Portal (Renew, not Create) with the same Apple ID; to "
            "change the topic anyway, confirm the topic change.",
            f"Chủ đề (topic) của chứng thư số mới ({new_topic}) khác chủ đề {old} mà {count} iPad đã đăng ký đang "
            "dùng: các iPad này sẽ không nhận được thông báo đẩy và phải đăng ký lại. Đề nghị gia hạn (Renew) "
            "chứng thư số hiện có trên Apple Push Certificates Portal bằng đúng Apple ID đã tạo, không tạo mới "
            "(Create). Chỉ xác nhận đổi chủ đề khi đã có kế hoạch đăng ký lại toàn bộ iPad.",
            enrolled=others, new_topic=new_topic)
    return others


def classify(status_code: int | None, reason: str | None, transport_error: str | None = None) -> str | None:
    """'certificate' when an APNs answer condemns the certificate, 'topic' when the device token belongs
    to another topic, else None (a matter of one device or a transient fault)."""
    if transport_error and transport_error.startswith("TLS:"):
        return "certificate"  # Apple refused the client certificate in the handshake
    if status_code == 403 and reason in CERTIFICATE_REASONS:
        return "certificate"
    if status_code == 400 and reason in TOPIC_REASONS:
        return "topic"
    return None


def warning_due(info: PushCertificate, now: dt.datetime, warned_days: int | None) -> int | None:
    """The threshold (30, 14, 7, 0 = its last day or expired) newly crossed since the last warning, or None."""
    return warning_threshold(info.days_left(now), (*WARN_DAYS, 0), warned_days)
