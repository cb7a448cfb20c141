"""Verify the digital signatures (chữ ký số) embedded in an uploaded PDF, with pyHanko.

Status stored on the document:
  valid     every embedded signature is intact (the signed bytes are unchanged), cryptographically
            valid, chains to a trusted root, and nothing after it changes the signed content in
            a way the signature does not allow (pyHanko's bottom_line)
  invalid   at least one signature fails any of these (tampered, unknown signer, broken CMS,
            disallowed later modification); the details say which
  unsigned  no signature field with a signature

Trusted roots (the state cipher authority's CA, Ban Cơ yếu Chính phủ, in production):
  every PEM/DER certificate in <instance>/document-trust/, plus the PEM bundle named by
  IPAD_MDM_DOCUMENT_TRUST (environment). Read at each upload so adding a root needs no restart.
The device CA of this server is deliberately NOT trusted for document signatures.

Revocation is checked "soft-fail" and offline (no fetching): the server has no route to the
authority's OCSP/CRL endpoints from the protected network; the document system upstream already
verifies signatures against them. A revoked status found in embedded revocation info still fails.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("document_gateway.signatures")


@dataclass
class SignatureReport:
    status: str = "unsigned"
    signer: str | None = None
    signed_at: dt.datetime | None = None
    details: list = field(default_factory=list)


def trust_roots(instance_dir: Path) -> list:
    from asn1crypto import pem, x509 as ax509

    sources: list[Path] = []
    folder = Path(instance_dir) / "document-trust"
    if folder.is_dir():
        sources += sorted(p for p in folder.iterdir() if p.is_file())
    env = os.environ.get("IPAD_MDM_DOCUMENT_TRUST")
    if env:
        sources.append(Path(env))
    roots = []
    for path in sources:
        try:
            data = path.read_bytes()
            if pem.detect(data):
                for _, _, der in pem.unarmor(data, multiple=True):
                    roots.append(ax509.Certificate.load(der))
            else:
                roots.append(ax509.Certificate.load(data))
        except Exception:
            log.warning("document-trust: cannot read %s as a certificate; ignored", path)
    return roots


def _human(name) -> str:
    try:
        return name.human_friendly
    except Exception:
        return str(name)


def sync_asn1_oid_maps() -> None:
    """asn1crypto builds each OID class's name->OID reverse map once, on first use. pyHanko (and
    asn1crypto.tsp, which it imports) add names such as signing_certificate_v2 to the forward
    maps at import time; if the project's own CMS code used those classes earlier in the
    process, the reverse maps are stale and pyHanko fails with "invalid literal for int()".
    Rebuild every stale reverse map (idempotent, cheap)."""
    from asn1crypto import core

    stack = list(core.ObjectIdentifier.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        forward = cls.__dict__.get("_map")
        reverse = cls.__dict__.get("_reverse_map")
        if forward is not None and reverse is not None and any(v not in reverse for v in forward.values()):
            for key, value in forward.items():
                reverse.setdefault(value, key)


def verify_pdf(path: Path, instance_dir: Path) -> SignatureReport:
    # Imported here: pyHanko is large and only uploads need it.
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    sync_asn1_oid_maps()

    report = SignatureReport()
    with open(path, "rb") as f:
        try:
            reader = PdfFileReader(f, strict=False)
            sigs = list(reader.embedded_signatures)
        except Exception as exc:
            # A PDF pyHanko cannot parse is not refused (viewers are more lenient) but cannot
            # claim a valid signature either.
            log.info("PDF signature scan failed: %s", exc)
            report.details.append({"error": f"PDF structure unreadable: {type(exc).__name__}"})
            report.status = "unsigned"
            return report
        if not sigs:
            return report
        roots = trust_roots(instance_dir)
        all_ok = True
        for sig in sigs:
            entry: dict = {"field": sig.field_name}
            try:
                vc = ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")
                st = validate_pdf_signature(sig, vc)
                entry.update(
                    intact=bool(st.intact), valid=bool(st.valid), trusted=bool(st.trusted),
                    revoked=bool(st.revoked), coverage=getattr(st.coverage, "name", str(st.coverage)),
                    modification_level=getattr(st.modification_level, "name", None),
                    docmdp_ok=st.docmdp_ok, ok=bool(st.bottom_line),
                    signer=_human(st.signing_cert.subject) if st.signing_cert is not None else None,
                    signed_at=st.signer_reported_dt.isoformat() if st.signer_reported_dt else None,
                )
                if st.signing_cert is not None and report.signer is None:
                    report.signer = entry["signer"]
                    report.signed_at = st.signer_reported_dt
                if not st.bottom_line:
                    all_ok = False
                    entry["reason"] = ("content changed after signing" if not st.intact else
                                       "signature value invalid" if not st.valid else
                                       "signer certificate not trusted" if not st.trusted else
                                       "disallowed modification after signing")
            except Exception as exc:
                all_ok = False
                entry.update(ok=False, reason=f"cannot validate: {type(exc).__name__}: {exc}"[:300])
            report.details.append(entry)
        report.status = "valid" if all_ok else "invalid"
        if report.signed_at is not None and report.signed_at.tzinfo is None:
            report.signed_at = report.signed_at.replace(tzinfo=dt.timezone.utc)
    return report
