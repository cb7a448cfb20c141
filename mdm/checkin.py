"""Device authentication and the check-in / connect state machine."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import logging
import os
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.crypto import cms, cms_fast
from ipad_mdm.crypto.ca import CertificateAuthority
from ipad_mdm.db import add_row, hold, utcnow
from ipad_mdm.hooks import Hooks

from . import commands as command_queue
from .identity.renewal import on_identity_in_use
from .identity.revocation import revoke_identity
from . import ddm, fastpath, provisioning
from .protocol import clip as protocol_clip
from .models import CheckinEvent, Device, EnrollmentToken, IdentityCertificate, StatusReportRecord
from .protocol import Authenticate, CheckinMessage, CheckOut, CommandResponse, DeclarativeManagement, TokenUpdate

log = logging.getLogger(__name__)


class DeviceAuthError(Exception):
    """The request is not from an enrolled device; `status` is 401 or 403, `code` machine-readable:
    signature_invalid, certificate_invalid, untrusted_proxy, certificate_untrusted, certificate_expired,
    certificate_not_yet_valid (beyond CLOCK_TOLERANCE),
    certificate_unknown, certificate_revoked, certificate_unbound, certificate_superseded,
    identity_conflict, serial_mismatch, reenroll_wrong_device, device_retired, device_state."""

    def __init__(self, status: int, reason: str, code: str = "unauthorised"):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


class IdentityConflict(DeviceAuthError):
    """A check-in naming a UDID that belongs to another identity. Refused (403), with nothing
    of the request stored; `record_conflict` then revokes the offending identity (when `revoke`)
    and records a security event in a transaction of its own."""

    def __init__(self, kind: str, reason: str, *, udid: str, identity: "IdentityCertificate",
                 device_id: int | None, message_type: str, revoke: bool):
        super().__init__(403, reason, "identity_conflict")
        self.kind = kind
        self.udid = udid
        self.identity_id = identity.id
        self.identity_serial = identity.serial
        self.token_id = identity.enrollment_token_id
        self.device_id = device_id
        self.message_type = message_type
        self.revoke = revoke


def certificate_from_signature(body: bytes, signature_b64: str) -> x509.Certificate:
    """Verify the Mdm-Signature header (detached CMS over the body) and return its signer."""
    try:
        der = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DeviceAuthError(401, "Mdm-Signature is not valid base64", "signature_invalid") from None
    signer = cms_fast.detached_signer(der, body)  # the shape iPads send, read without asn1crypto
    if signer is not None:
        return signer
    try:
        return cms.verify(der, detached_content=body).signer
    except cms.CMSError as exc:
        raise DeviceAuthError(401, f"Mdm-Signature rejected: {exc}", "signature_invalid") from None


# environ keys only mdm.connect_wsgi sets (a client's headers arrive as HTTP_*): the signer it verified,
# with the exact body and header it verified it over, and that the idle fast path said no.
VERIFIED_SIGNER = "ipad_mdm.mdm.verified_signer"
IDLE_TRIED = "ipad_mdm.mdm.idle_tried"


def verified_signer(environ, body: bytes, signature: str) -> x509.Certificate | None:
    """The certificate connect_wsgi verified `signature` over `body` to, or None (verify it here)."""
    found = environ.get(VERIFIED_SIGNER)
    if found is None or found[1] != signature or found[0] != body:
        return None
    return found[2]


def certificate_from_proxy_header(value: str) -> x509.Certificate:
    """A client certificate forwarded by the trusted TLS proxy (URL-encoded PEM)."""
    try:
        pem = unquote(value).encode()
        return x509.load_pem_x509_certificate(pem)
    except Exception:
        raise DeviceAuthError(401, "client certificate header is not a PEM certificate", "certificate_invalid") from None


class UntrustedProxy(DeviceAuthError):
    """The client-certificate header came without the proxy's shared secret."""

    def __init__(self):
        super().__init__(401, "client certificate header from an untrusted proxy", "untrusted_proxy")


def proxy_secret_ok(headers, settings) -> bool:
    """The request came through the trusted proxy: it carries the configured shared secret."""
    sent = headers.get("X-Proxy-Secret", "")
    return bool(settings.proxy_secret) and hmac.compare_digest(sent.encode("utf-8", "replace"),
                                                               settings.proxy_secret.encode())


def presented_certificate(headers, environ, settings) -> tuple[x509.Certificate | None, bool]:
    """The TLS client certificate of a request and whether a proxy forwarded it.

    Behind a TLS proxy: the configured header, accepted only with the shared secret
    (without one anyone who reaches the port could forge the header). Otherwise the
    embedded TLS server's own SSL_CLIENT_CERT. Raises UntrustedProxy / DeviceAuthError.
    """
    value = headers.get(settings.client_cert_header) if settings.client_cert_header else None
    if value:
        if not proxy_secret_ok(headers, settings):
            raise UntrustedProxy()
        return certificate_from_proxy_header(value), True
    pem = environ.get("SSL_CLIENT_CERT")
    return (certificate_from_proxy_header(pem) if pem else None), False


def trusted_identity(session: Session, ca: CertificateAuthority, cert: x509.Certificate) -> IdentityCertificate:
    """The stored identity certificate, if it is ours, current and not revoked."""
    # The identity's device comes in the same query (into the session's identity map, where
    # _device_for finds it): one statement, not two, for every device request on the full path.
    found = session.execute(
        select(IdentityCertificate, Device).outerjoin(Device, Device.id == IdentityCertificate.device_id)
        .where(IdentityCertificate.sha256_fingerprint == cert.fingerprint(hashes.SHA256()).hex())
    ).first()
    row = found[0] if found is not None else None
    if found is not None:
        session.info["mdm.identity_device"] = found[1]  # the identity map holds rows weakly
    judge_identity(ca, cert, known=row is not None, revoked_at=row.revoked_at if row is not None else None)
    return row


# Servers of one deployment may disagree by minutes (a process on a host whose NTP lags): a
# certificate that becomes valid within this much of now is accepted. IPAD_MDM_CLOCK_TOLERANCE_SECONDS.
CLOCK_TOLERANCE = dt.timedelta(seconds=int(os.environ.get("IPAD_MDM_CLOCK_TOLERANCE_SECONDS", "300")))


def judge_identity(ca: CertificateAuthority, cert: x509.Certificate, *, known: bool, revoked_at,
                   fingerprint: bytes | None = None) -> None:
    """Who may act as a device: the one rule, for callers that read the identity row themselves
    (the gateway reads it joined with what it needs, in one query). Raises DeviceAuthError.
    `fingerprint`: the certificate's SHA-256, when the caller has it already."""
    if not ca.issued_this(cert, fingerprint):
        raise DeviceAuthError(403, "certificate was not issued by this server's CA", "certificate_untrusted")
    now = utcnow()
    if now > cert.not_valid_after_utc:
        raise DeviceAuthError(403, "certificate has expired", "certificate_expired")
    if now < cert.not_valid_before_utc - CLOCK_TOLERANCE:
        # Beyond the tolerance a clock is wrong (this server's or the issuer's), not merely skewed.
        raise DeviceAuthError(403, f"certificate is not valid before {cert.not_valid_before_utc.isoformat()} (this "
                                   f"server's clock reads {now.isoformat()}; tolerance {CLOCK_TOLERANCE})",
                              "certificate_not_yet_valid")
    if not known:
        raise DeviceAuthError(403, "certificate is not a device identity issued here", "certificate_unknown")
    if revoked_at is not None:
        raise DeviceAuthError(403, "certificate has been revoked", "certificate_revoked")


REENROLL_HINT_EN = ("if this iPad was erased or replaced, an IT administrator must authorise its re-enrollment "
                    "(`ipad-mdm device re-enroll {udid}`, POST /api/v1/devices/{udid}/re-enroll, or the console's "
                    "re-enroll button) and enroll it with the URL that gives")


def _device_for(session: Session, identity: IdentityCertificate, udid: str, message_type: str) -> Device | None:
    """The device a check-in may act on, or a refusal.

    A UDID that has ever been bound to an identity stays with its identities: another
    identity naming it is an IdentityConflict (a takeover attempt when the UDID still has an
    unrevoked identity), unless this is the Authenticate of an explicit re-enrollment of that
    very device."""
    if identity.device_id is not None:
        device = session.get(Device, identity.device_id)
        if device is None or device.udid != udid:
            device = session.scalar(select(Device).where(Device.udid == udid))
            raise IdentityConflict("identity_mismatch", "UDID does not match the device certificate", udid=udid,
                                   identity=identity, device_id=device.id if device else None,
                                   message_type=message_type, revoke=False)
        _track_current_identity(session, device, identity, message_type)
        return device
    device = session.scalar(select(Device).where(Device.udid == udid))
    token = _token_of(session, identity)
    if device is not None and _has_identity_history(session, device):
        if message_type == "Authenticate" and token is not None and token.reenroll_device_id == device.id:
            return device
        live = _live_identities(session, device)
        kind = "device_takeover_attempt" if live else "unauthorised_reenrollment"
        raise IdentityConflict(kind, "this iPad (UDID {u}) is already enrolled with another identity; ".format(u=udid)
                               + REENROLL_HINT_EN.format(udid=udid), udid=udid, identity=identity,
                               device_id=device.id, message_type=message_type, revoke=True)
    if message_type != "Authenticate":
        raise DeviceAuthError(403, "certificate is not bound to a device; Authenticate first", "certificate_unbound")
    if token is not None and token.reenroll_device_id is not None and (device is None or device.id != token.reenroll_device_id):
        # A re-enrollment URL used by another iPad: it was copied, or handed to the wrong device.
        raise IdentityConflict("unauthorised_reenrollment", "this enrollment token was made to re-enroll another device",
                               udid=udid, identity=identity, device_id=device.id if device else None,
                               message_type=message_type, revoke=True)
    return device


def _token_of(session: Session, identity: IdentityCertificate) -> EnrollmentToken | None:
    """The enrollment token the identity was issued for; an Authenticate asks for it twice."""
    if identity.enrollment_token_id is None:
        return None
    token = session.get(EnrollmentToken, identity.enrollment_token_id)
    if token is not None:
        hold(session, token)
    return token


def _has_identity_history(session: Session, device: Device) -> bool:
    return session.scalar(select(IdentityCertificate.id).where(IdentityCertificate.device_id == device.id).limit(1)) is not None


def _live_identities(session: Session, device: Device, *, except_id: int | None = None) -> list[IdentityCertificate]:
    stmt = select(IdentityCertificate).where(IdentityCertificate.device_id == device.id,
                                             IdentityCertificate.revoked_at.is_(None))
    if except_id is not None:
        stmt = stmt.where(IdentityCertificate.id != except_id)
    return list(session.scalars(stmt.order_by(IdentityCertificate.id)))


def _track_current_identity(session: Session, device: Device, identity: IdentityCertificate, message_type: str) -> None:
    """The device signs with `identity`. A newer identity of the same device (a renewal) takes over
    on first use and the older ones are revoked as superseded; an older one is refused."""
    current = device.current_identity_id
    if current == identity.id:
        return
    if current is not None and identity.id < current:
        raise IdentityConflict("superseded_identity_used", "certificate has been superseded by a newer identity",
                               udid=device.udid, identity=identity, device_id=device.id,
                               message_type=message_type, revoke=True)
    superseded = [c for c in _live_identities(session, device, except_id=identity.id) if c.id < identity.id]
    for cert in superseded:
        revoke_identity(session, cert, "superseded")
    on_identity_in_use(session, identity)
    device.current_identity_id = identity.id
    if superseded:
        log.info("device %s now uses identity %s; superseded %s revoked", device.udid, identity.serial,
                 ", ".join(c.serial for c in superseded))
    session.flush()


def record_conflict(session: Session, conflict: IdentityConflict, *, source_ip: str | None = None) -> None:
    """After the refused request rolled back: revoke the offending identity (if asked) and
    record the security event, in the caller's (new) transaction."""
    from ipad_mdm import security_events

    if conflict.revoke:
        identity = session.get(IdentityCertificate, conflict.identity_id)
        if identity is not None:
            revoke_identity(session, identity, "privilegeWithdrawn")
    details = {"message_type": conflict.message_type, "certificate_serial": conflict.identity_serial,
               "enrollment_token_id": conflict.token_id, "certificate_revoked": conflict.revoke,
               "key": conflict.identity_serial}
    vi = {
        "device_takeover_attempt": "Một chứng thư số định danh mới (số sê-ri {s}) đã gửi {m} nhân danh iPad UDID {u} "
                                   "đang được quản lý. Yêu cầu đã bị từ chối, chứng thư số mới đã bị thu hồi.",
        "unauthorised_reenrollment": "iPad UDID {u} đã từng đăng ký; yêu cầu {m} bằng chứng thư số mới (số sê-ri {s}) "
                                     "chưa được bộ phận CNTT cho phép đăng ký lại nên đã bị từ chối và chứng thư số "
                                     "mới đã bị thu hồi.",
        "identity_mismatch": "Chứng thư số định danh số sê-ri {s} của một thiết bị khác đã gửi {m} nhân danh iPad "
                             "UDID {u}. Yêu cầu đã bị từ chối.",
        "superseded_identity_used": "Chứng thư số định danh đã được thay thế (số sê-ri {s}) vẫn được dùng để gửi {m} "
                                    "cho iPad UDID {u}. Yêu cầu đã bị từ chối, chứng thư số đã bị thu hồi.",
    }[conflict.kind]
    en = {
        "device_takeover_attempt": "A new identity certificate (serial {s}) sent {m} for the managed iPad UDID {u}. "
                                   "The request was refused and the new certificate revoked.",
        "unauthorised_reenrollment": "iPad UDID {u} was enrolled before; {m} with a new certificate (serial {s}) "
                                     "had no re-enrollment authorised by IT, was refused, and the certificate revoked.",
        "identity_mismatch": "Another device's identity certificate (serial {s}) sent {m} for iPad UDID {u}. "
                             "The request was refused.",
        "superseded_identity_used": "A superseded identity certificate (serial {s}) sent {m} for iPad UDID {u}. "
                                    "The request was refused and the certificate revoked.",
    }[conflict.kind]
    fmt = dict(s=conflict.identity_serial, m=conflict.message_type, u=conflict.udid)
    security_events.record(session, conflict.kind, summary_vi=vi.format(**fmt), summary_en=en.format(**fmt),
                           udid=conflict.udid, device_id=conflict.device_id, details=details, source_ip=source_ip,
                           dedupe=not conflict.revoke)


def handle_checkin(session: Session, hooks: Hooks, identity: IdentityCertificate, msg: CheckinMessage,
                   *, seal=None) -> None:
    """Apply one check-in message. `seal` encrypts secrets at rest (the UnlockToken)."""
    now = utcnow()
    if isinstance(msg, Authenticate):
        device = _device_for(session, identity, msg.udid, msg.message_type)
        if device is not None and identity.device_id == device.id and device.enrollment_state == "enrolled":
            # The same identity authenticating again (a replayed or repeated message): nothing a
            # TokenUpdate would have to restore (state, push token, UnlockToken) is reset.
            log.info("Authenticate from already enrolled %s with its current identity: nothing changed", msg.udid)
            return
        device = _authenticate(session, hooks, identity, msg, device, now)
    elif isinstance(msg, TokenUpdate):
        device = _device_for(session, identity, msg.udid, msg.message_type)
        first = device.enrollment_state != "enrolled"
        device.push_token = msg.token.hex()
        device.push_magic = msg.push_magic
        device.topic = msg.topic
        if msg.unlock_token is not None:
            device.unlock_token = seal(msg.unlock_token) if seal else msg.unlock_token
        device.awaiting_configuration = msg.awaiting_configuration
        device.enrollment_state = "enrolled"
        device.token_updated_at = now
        device.last_seen_at = now
        device.push_failures = 0
        if first:
            command_queue.enqueue_many(session, device, ("DeviceInformation", "SecurityInfo", "ProfileList",
                                                         "CertificateList", "InstalledApplicationList"),
                                       requested_by="enrollment")
            # The other packages' work for a new iPad (devices.enrolled) runs after this commits,
            # off the iPad's request path: mdm.provisioning.
            provisioning.mark(session, device, now)
        session.flush()  # the device in one UPDATE (push_pending with it), the queued commands in one INSERT
    elif isinstance(msg, CheckOut):
        device = _device_for(session, identity, msg.udid, msg.message_type)
        device.enrollment_state = "checked_out"
        device.checked_out_at = now
        device.push_token = None
        device.push_magic = None
        device.last_seen_at = now
        # The MDM profile (and with it the identity) is gone from the device.
        for cert in device.certificates:
            revoke_identity(session, cert, "cessationOfOperation")
        hooks.emit("device.checked_out", session=session, device=device)
    else:  # pragma: no cover - parse_checkin only returns the three types
        raise ValueError(msg.message_type)
    add_row(session, CheckinEvent, device_id=device.id, udid=msg.udid, message_type=msg.message_type, at=now)


def _authenticate(session: Session, hooks: Hooks, identity: IdentityCertificate, msg: Authenticate,
                  device: Device | None, now) -> Device:
    token = _token_of(session, identity)
    serial = msg.raw.get("SerialNumber")
    if token is not None and token.serial_number:
        if serial != token.serial_number:
            raise DeviceAuthError(403, "serial number does not match the enrollment token", "serial_mismatch")
        if device is not None and device.serial_number and device.serial_number != token.serial_number:
            raise DeviceAuthError(403, "the serial number on record for this UDID does not match the enrollment token",
                                  "serial_mismatch")
    reenroll = device is not None and token is not None and token.reenroll_device_id == device.id
    if device is None:
        device = Device(udid=msg.udid, enrolled_at=now)
        session.add(device)
    if device.enrollment_state == "retired" and not reenroll:
        raise DeviceAuthError(403, "device has been retired", "device_retired")
    device.serial_number = serial or device.serial_number
    device.model = msg.raw.get("Model") or device.model
    device.model_name = msg.raw.get("ModelName") or device.model_name
    device.product_name = msg.raw.get("ProductName") or device.product_name
    device.os_version = msg.raw.get("OSVersion") or device.os_version
    device.build_version = msg.raw.get("BuildVersion") or device.build_version
    device.device_name = msg.raw.get("DeviceName") or device.device_name
    device.imei = msg.raw.get("IMEI") or device.imei
    device.topic = msg.topic
    if token is not None:
        device.enrollment_token_id = token.id
        device.unit_id = token.unit_id or device.unit_id
    # A new Authenticate starts a new enrollment: no pushes until TokenUpdate.
    device.enrollment_state = "authenticated"
    device.push_token = None
    device.push_magic = None
    device.unlock_token = None
    device.checked_out_at = None
    device.last_seen_at = now
    device.current_identity_id = identity.id  # in the device's INSERT (a new iPad), not an UPDATE after it
    session.flush()
    identity.device_id = device.id
    if reenroll:
        old = _live_identities(session, device, except_id=identity.id)
        for cert in old:
            revoke_identity(session, cert, "superseded")
        from ipad_mdm import security_events

        security_events.record(
            session, "device_reenrolled", udid=device.udid, device_id=device.id,
            summary_vi=f"iPad UDID {device.udid} đã đăng ký lại bằng mã đăng ký lại #{token.id} do {token.created_by} "
                       f"tạo; {len(old)} chứng thư số định danh cũ đã bị thu hồi.",
            summary_en=f"iPad UDID {device.udid} re-enrolled with re-enrollment token #{token.id} made by "
                       f"{token.created_by}; {len(old)} old identity certificate(s) revoked.",
            details={"enrollment_token_id": token.id, "revoked_serials": [c.serial for c in old],
                     "new_serial": identity.serial})
    device.current_identity_id = identity.id
    session.flush()
    fastpath.forget(session, device_id=device.id)  # a new enrollment: the old identity's entry goes
    hooks.emit("device.authenticated", session=session, device=device)
    return device


def handle_connect(session: Session, hooks: Hooks, identity: IdentityCertificate, response: CommandResponse) -> bytes | None:
    """Store the device's answer and return the next command plist (or None)."""
    device = _device_for(session, identity, response.udid, "connect")
    if device.enrollment_state not in ("enrolled", "authenticated"):
        raise DeviceAuthError(403, f"device is {device.enrollment_state}", "device_state")
    fastpath.touch(device, utcnow())
    if response.status != "Idle":
        command_queue.record_response(session, hooks, device, response)
    nxt = command_queue.next_for_delivery(session, device, after_idle=response.status == "Idle")
    return nxt.command_plist if nxt is not None else None


def handle_declarative(session: Session, hooks: Hooks, identity: IdentityCertificate, msg: DeclarativeManagement,
                       provider) -> dict | None:
    """One DeclarativeManagement check-in: a status report is stored (and `status.reported`
    emitted, so the verdict follows in this transaction); the other endpoints are answered by
    `provider(session, device, endpoint)` (the declarative package), or UnknownDeclaration."""
    endpoint = ddm.parse_endpoint(msg.endpoint)
    device = _device_for(session, identity, msg.udid, msg.message_type)
    if device.enrollment_state != "enrolled":
        raise DeviceAuthError(403, f"device is {device.enrollment_state}", "device_state")
    now = utcnow()
    if device.ddm_enabled_at is None:
        device.ddm_enabled_at = now
        log.info("declarative management is on for %s", device.udid)
    if endpoint.name != "status":
        if provider is None:
            raise ddm.UnknownDeclaration("declarative management is not served by this server")
        return provider(session, device, endpoint)
    report = ddm.parse_status_report(msg.data)
    merged, changed = ddm.merge_status(device.ddm_status, report, now)
    device.ddm_status = merged
    device.ddm_status_at = now
    fastpath.touch(device, now)
    version = report.items.get("device.operating-system.version")
    build = report.items.get("device.operating-system.build-version")
    if isinstance(version, str) and version:
        device.os_version = protocol_clip("OSVersion", version)
    if isinstance(build, str) and build:
        device.build_version = protocol_clip("BuildVersion", build)
    session.add(StatusReportRecord(device_id=device.id, received_at=now, full_report=report.full,
                                   items=report.items, changed=changed, errors=report.errors or None,
                                   size_bytes=report.size))
    session.flush()
    hooks.emit("status.reported", session=session, device=device, report=report, changed=changed)
    return None


def device_of_request(session: Session, inst, headers, environ, body: bytes) -> Device:
    """The enrolled device behind a device-side GET (declarative asset data, legacy profiles):
    Mdm-Signature over the body, else the TLS client certificate. Only the identity the device
    currently signs with is accepted."""
    signature = headers.get("Mdm-Signature")
    if signature:
        cert = certificate_from_signature(body, signature)
    else:
        cert, _via_proxy = presented_certificate(headers, environ, inst.settings)
        if cert is None:
            raise DeviceAuthError(401, "request is not signed (Mdm-Signature missing)")
    identity = trusted_identity(session, inst.ca, cert)
    device = session.get(Device, identity.device_id) if identity.device_id is not None else None
    if device is None:
        raise DeviceAuthError(403, "certificate is not bound to a device", "certificate_unbound")
    if device.current_identity_id not in (None, identity.id):
        raise DeviceAuthError(403, "certificate has been superseded by a newer identity", "certificate_superseded")
    if device.enrollment_state != "enrolled":
        raise DeviceAuthError(403, f"device is {device.enrollment_state}", "device_state")
    return device
