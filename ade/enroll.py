"""The iPad's first words in Setup Assistant: its signed machine information.

With an ADE profile, Setup Assistant POSTs to the profile's `url` a CMS SignedData (DER,
Content-Type application/pkcs7-signature) over a plist: UDID, SERIAL, PRODUCT, VERSION (and
IMEI, MEID, LANGUAGE). The signature is the device's, with its Apple-issued device certificate
embedded. Accepted only when the signature verifies over the plist, the signer chains to Apple's
device CA (ade/apple_iphone_device_ca.pem; IPAD_MDM_ADE_DEVICE_CA names another PEM bundle), and
the serial is one this office expects: synced from Apple Business Manager, or registered in the
console's handover workflow. Without the chain check anyone who learnt a serial could fetch an
enrollment profile for it.
Pure: no Flask; the view maps MachineInfoRefused to 403/400.
"""
from __future__ import annotations

import plistlib
from dataclasses import dataclass

from cryptography import x509

from ipad_mdm.crypto import cms

MAX_BYTES = 64 * 1024


class MachineInfoRefused(ValueError):
    def __init__(self, code: str, message: str, status: int = 403):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass(frozen=True)
class MachineInfo:
    udid: str
    serial: str
    product: str
    version: str
    language: str | None
    signer: x509.Certificate


def read(body: bytes, anchors: list[x509.Certificate]) -> MachineInfo:
    if not body or len(body) > MAX_BYTES:
        raise MachineInfoRefused("machine_info_malformed", "machine information missing or too large", 400)
    try:
        signed = cms.verify(body)
    except cms.CMSError as exc:
        raise MachineInfoRefused("machine_info_signature", f"machine information signature: {exc}") from None
    if anchors and not _chains(signed.signer, signed.certificates, anchors):
        raise MachineInfoRefused("machine_info_untrusted", "machine information not signed by an Apple device certificate")
    try:
        info = plistlib.loads(signed.content)
    except Exception:
        raise MachineInfoRefused("machine_info_malformed", "machine information is not a plist", 400) from None
    if not isinstance(info, dict):
        raise MachineInfoRefused("machine_info_malformed", "machine information is not a dictionary", 400)
    values = {}
    for key in ("UDID", "SERIAL", "PRODUCT", "VERSION"):
        v = info.get(key)
        if not isinstance(v, str) or not v.strip() or len(v) > 64:
            raise MachineInfoRefused("machine_info_malformed", f"machine information lacks {key}", 400)
        values[key] = v.strip()
    language = info.get("LANGUAGE") if isinstance(info.get("LANGUAGE"), str) else None
    return MachineInfo(values["UDID"], values["SERIAL"].upper(), values["PRODUCT"], values["VERSION"],
                       language, signed.signer)


def _chains(signer: x509.Certificate, embedded: list, anchors: list[x509.Certificate]) -> bool:
    """signer → (embedded intermediates)* → an anchor, each link a valid signature."""
    current, pool = signer, [c for c in embedded if c != signer]
    for _ in range(4):
        for anchor in anchors:
            if current.issuer == anchor.subject and _signed_by(current, anchor):
                return True
        nxt = next((c for c in pool if current.issuer == c.subject and _signed_by(current, c)), None)
        if nxt is None:
            return False
        pool.remove(nxt)
        current = nxt
    return False


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False


def load_anchors(path: str | None) -> list[x509.Certificate]:
    if not path:
        return []
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())
