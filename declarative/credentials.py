"""Asset data the server makes: the instance CA certificate and per-device identities.

A per-device identity (a key and a client certificate from the instance CA, e.g. for the VPN)
is made once per device and asset version, kept Fernet-encrypted, and renewed when it has less
than a tenth of its life left. Its PKCS#12 password travels only inside the asset data, which
is served to that device alone over its MDM identity; neither is ever logged or shown.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from mdm import Device

from .models import Declaration, DeclarationVersion, DeviceCredential

log = logging.getLogger(__name__)


class Credentials:
    def __init__(self, instance):
        self.instance = instance

    def ca_pem(self) -> bytes:
        return self.instance.ca.certificate_pem

    def identity_document(self, session: Session, device: Device, decl: Declaration,
                          version: DeclarationVersion) -> bytes:
        fernet = self.instance.fernet()
        row = session.scalar(select(DeviceCredential).where(DeviceCredential.device_id == device.id,
                                                            DeviceCredential.declaration_id == decl.id))
        opts = (version.source or {}).get("device_identity", {})
        days = int(opts.get("days", 365))
        now = utcnow()
        if row is not None and row.version == version.version and row.not_after - now > dt.timedelta(days=days) / 10:
            return fernet.decrypt(row.sealed)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        purpose = str(opts.get("purpose", "vpn"))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{purpose} {device.udid}"[:64]),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                (self.instance.settings.organization or "ipad-mdm")[:64])])
        cert = self.instance.ca.issue_client(subject, key.public_key(), days)
        password = secrets.token_urlsafe(24)
        p12 = pkcs12.serialize_key_and_certificates(
            f"{purpose} {device.udid}".encode()[:64], key, cert, [self.instance.ca.certificate],
            serialization.BestAvailableEncryption(password.encode()))
        document = json.dumps({"Password": password, "Identity": base64.b64encode(p12).decode()}).encode()
        if row is None:
            row = DeviceCredential(device_id=device.id, declaration_id=decl.id)
            session.add(row)
        row.version, row.serial, row.not_after = version.version, format(cert.serial_number, "x"), cert.not_valid_after_utc
        row.sealed, row.created_at = fernet.encrypt(document), now
        session.flush()
        log.info("identity %s issued to %s for asset %s", row.serial, device.udid, decl.identifier)
        return document
