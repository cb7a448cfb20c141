"""Sign configuration profiles as CMS SignedData (DER), as iOS expects."""
from __future__ import annotations

from cryptography import x509

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import KeyHandle


def sign_profile(profile_plist: bytes, signer_cert: x509.Certificate, signer_key: KeyHandle,
                 chain: list[x509.Certificate] | None = None) -> bytes:
    """Attached signature; the chain lets the device show who signed it."""
    return cms.sign(profile_plist, signer_cert, signer_key, detached=False, extra_certs=chain or [])


def verify_profile(signed: bytes) -> tuple[bytes, x509.Certificate]:
    """Return (profile plist, signer certificate); raises cms.CMSError."""
    result = cms.verify(signed)
    return result.content, result.signer
