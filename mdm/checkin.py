"""Device authentication and the check-in / connect state machine."""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.ca import CertificateAuthority
from ipad_mdm.db import utcnow
from ipad_mdm.hooks import Hooks

from . import commands as command_queue
from .models import CheckinEvent, Device, EnrollmentToken, IdentityCertificate
from .protocol import Authenticate, CheckinMessage, CheckOut, CommandResponse, TokenUpdate

log = logging.getLogger(__name__)


class DeviceAuthError(Exception):
    """The request is not from an enrolled device; `status` is 401 or 403."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def certificate_from_signature(body: bytes, signature_b64: str) -> x509.Certificate:
    """Verify the Mdm-Signature header (detached CMS over the body) and return its signer."""
    try:
        der = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DeviceAuthError(401, "Mdm-Signature is not valid base64") from None
    try:
        return cms.verify(der, detached_content=body).signer
    except cms.CMSError as exc:
        raise DeviceAuthError(401, f"Mdm-Signature rejected: {exc}") from None


def certificate_from_proxy_header(value: str) -> x509.Certificate:
    """A client certificate forwarded by the trusted TLS proxy (URL-encoded PEM)."""
    try:
        pem = unquote(value).encode()
        return x509.load_pem_x509_certificate(pem)
    except Exception:
        raise DeviceAuthError(401, "client certificate header is not a PEM certificate") from None


class UntrustedProxy(DeviceAuthError):
    """The client-certificate header came without the proxy's shared secret."""

    def __init__(self):
        super().__init__(401, "client certificate header from an untrusted proxy")


def presented_certificate(headers, environ, settings) -> tuple[x509.Certificate | None, bool]:
    """The TLS client certificate of a request and whether a proxy forwarded it.

    Behind a TLS proxy: the configured header, accepted only with the shared secret
    (without one anyone who reaches the port could forge the header). Otherwise the
    embedded TLS server's own SSL_CLIENT_CERT. Raises UntrustedProxy / DeviceAuthError.
    """
    value = headers.get(settings.client_cert_header) if settings.client_cert_header else None
    if value:
        sent = headers.get("X-Proxy-Secret", "")
        if not settings.proxy_secret or not hmac.compare_digest(sent.encode(), settings.proxy_secret.encode()):
            raise UntrustedProxy()
        return certificate_from_proxy_header(value), True
    pem = environ.get("SSL_CLIENT_CERT")
    return (certificate_from_proxy_header(pem) if pem else None), False


def trusted_identity(session: Session, ca: CertificateAuthority, cert: x509.Certificate) -> IdentityCertificate:
    """The stored identity certificate, if it is ours, current and not revoked."""
    if not ca.issued_this(cert):
        raise DeviceAuthError(403, "certificate was not issued by this server's CA")
    now = utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise DeviceAuthError(403, "certificate is expired or not yet valid")
    row = session.scalar(
        select(IdentityCertificate).where(IdentityCertificate.sha256_fingerprint == cert.fingerprint(hashes.SHA256()).hex())
    )
    if row is None:
        raise DeviceAuthError(403, "certificate is not a device identity issued here")
    if row.revoked_at is not None:
        raise DeviceAuthError(403, "certificate has been revoked")
    return row


def _device_for(session: Session, identity: IdentityCertificate, udid: str, *, allow_bind: bool) -> Device | None:
    device = session.scalar(select(Device).where(Device.udid == udid))
    if identity.device_id is not None:
        if device is None or identity.device_id != device.id:
            raise DeviceAuthError(403, "UDID does not match the device certificate")
        return device
    if not allow_bind:
        raise DeviceAuthError(403, "certificate is not bound to a device; Authenticate first")
    return device


def handle_checkin(session: Session, hooks: Hooks, identity: IdentityCertificate, msg: CheckinMessage,
                   *, seal=None) -> None:
    """Apply one check-in message. `seal` encrypts secrets at rest (the UnlockToken)."""
    now = utcnow()
    if isinstance(msg, Authenticate):
        device = _device_for(session, identity, msg.udid, allow_bind=True)
        token = session.get(EnrollmentToken, identity.enrollment_token_id) if identity.enrollment_token_id else None
        serial = msg.raw.get("SerialNumber")
        if token is not None and token.serial_number and serial != token.serial_number:
            raise DeviceAuthError(403, "serial number does not match the enrollment token")
        if device is None:
            device = Device(udid=msg.udid, enrolled_at=now)
            session.add(device)
        if device.enrollment_state == "retired":
            raise DeviceAuthError(403, "device has been retired")
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
        device.checked_out_at = None
        device.last_seen_at = now
        session.flush()
        identity.device_id = device.id
        hooks.emit("device.authenticated", session=session, device=device)
    elif isinstance(msg, TokenUpdate):
        device = _device_for(session, identity, msg.udid, allow_bind=False)
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
        session.flush()
        if first:
            for request_type in ("DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList", "InstalledApplicationList"):
                command_queue.enqueue(session, device, request_type, requested_by="enrollment")
            hooks.emit("device.enrolled", session=session, device=device)
    elif isinstance(msg, CheckOut):
        device = _device_for(session, identity, msg.udid, allow_bind=False)
        device.enrollment_state = "checked_out"
        device.checked_out_at = now
        device.push_token = None
        device.push_magic = None
        device.last_seen_at = now
        # The MDM profile (and with it the identity) is gone from the device.
        for cert in device.certificates:
            if cert.revoked_at is None:
                cert.revoked_at = now
                cert.revocation_reason = "cessationOfOperation"
        hooks.emit("device.checked_out", session=session, device=device)
    else:  # pragma: no cover - parse_checkin only returns the three types
        raise ValueError(msg.message_type)
    session.add(CheckinEvent(device_id=device.id, udid=msg.udid, message_type=msg.message_type, at=now))


def handle_connect(session: Session, hooks: Hooks, identity: IdentityCertificate, response: CommandResponse) -> bytes | None:
    """Store the device's answer and return the next command plist (or None)."""
    device = _device_for(session, identity, response.udid, allow_bind=False)
    if device.enrollment_state not in ("enrolled", "authenticated"):
        raise DeviceAuthError(403, f"device is {device.enrollment_state}")
    device.last_seen_at = utcnow()
    if response.status != "Idle":
        command_queue.record_response(session, hooks, device, response)
    nxt = command_queue.next_for_delivery(session, device, after_idle=response.status == "Idle")
    return nxt.command_plist if nxt is not None else None
