"""The CertificateList check: what the device holds against what we issued to it."""
from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.plists import json_data
from ipad_mdm.timefmt import iso

from ..models import Device, IdentityCertificate
from .models import CertificateCheck
from .revocation import revoke_identity

log = logging.getLogger("mdm.identity")


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def check_certificates(session: Session, ca, device: Device) -> dict:
    """Compare the device's CertificateList with the identities issued for it.

    Findings: missing_identity (no current identity of ours on the device),
    foreign_identity (an identity we did not issue to this device, e.g. a
    copied one), expired_identity, revoked_identity, unreadable_certificate.
    Certificates that are not identities and not from our CA (Wi-Fi roots a
    profile installed, ...) are counted but not flagged.
    """
    now = utcnow()
    issued = list(session.scalars(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id)))
    by_fp = {c.sha256_fingerprint: c for c in issued}
    ca_fp = _fingerprint(ca.certificate)
    findings: list[dict] = []
    seen_current: list[IdentityCertificate] = []
    seen_fps: set[str] = set()
    others = 0
    entries = device.certificate_list if isinstance(device.certificate_list, list) else []
    for index, entry in enumerate(entries):
        entry = entry if isinstance(entry, dict) else {}
        name = entry.get("CommonName")
        der = json_data(entry.get("Data"))
        try:
            cert = x509.load_der_x509_certificate(der) if der else None
        except ValueError:
            cert = None
        if cert is None:
            findings.append({"kind": "unreadable_certificate", "index": index, "common_name": name})
            continue
        fp = _fingerprint(cert)
        seen_fps.add(fp)
        if fp == ca_fp:
            continue  # our root, from the enrollment profile
        info = {"common_name": name, "sha256": fp, "serial": format(cert.serial_number, "x"),
                "not_after": iso(cert.not_valid_after_utc)}
        row = by_fp.get(fp)
        if row is not None:
            if row.revoked_at is not None:
                findings.append({"kind": "revoked_identity", **info, "revoked_at": iso(row.revoked_at)})
            elif cert.not_valid_after_utc <= now:
                findings.append({"kind": "expired_identity", **info})
            else:
                seen_current.append(row)
            continue
        if entry.get("IsIdentity") or ca.issued_this(cert):
            elsewhere = session.scalar(select(IdentityCertificate).where(IdentityCertificate.sha256_fingerprint == fp))
            why = "issued by this server to another device" if elsewhere is not None else "not issued by this server"
            findings.append({"kind": "foreign_identity", **info, "detail": why})
            continue
        others += 1
    if not seen_current:
        findings.append({"kind": "missing_identity",
                         "detail": "no current identity certificate issued to this device is on it"})
    _retire_superseded(session, issued, seen_current, seen_fps)
    check = session.scalar(select(CertificateCheck).where(CertificateCheck.device_id == device.id))
    if check is None:
        check = CertificateCheck(device_id=device.id)
        session.add(check)
    check.checked_at = now
    check.findings = findings
    check.ok = not findings
    session.flush()
    if findings:
        log.warning("certificate check of %s: %s", device.udid, ", ".join(f["kind"] for f in findings))
    return {"checked_at": iso(now), "ok": check.ok, "findings": findings, "other_certificates": others}


def _retire_superseded(session: Session, issued, seen_current, seen_fps) -> None:
    """After a renewal: the device holds the new identity and no longer the old one."""
    if not seen_current:
        return
    # Row ids follow issuance order (not_before has only second precision).
    newest = max(seen_current, key=lambda c: c.id)
    for cert in issued:
        if (cert.revoked_at is None and cert.id < newest.id
                and cert.sha256_fingerprint not in seen_fps):
            revoke_identity(session, cert, "superseded")
