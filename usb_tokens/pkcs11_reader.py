"""Read a USB token's signing certificate over PKCS#11, where the token is plugged in (the IT officer's
workstation running the CLI). Certificates are public objects: no PIN is asked, no login is made, and
nothing but certificates is read — the token's keys and PIN stay on the token."""
from __future__ import annotations

from ipad_mdm.crypto.pkcs11_keys import Pkcs11Error, pkcs11_lib

from .service import TokenRefused, signing_certificate


def read_token(module: str, *, token_label: str | None = None, token_serial: str | None = None) -> dict:
    """{"serial_number", "kind", "label", "certificate" (DER)} of the one token asked for (or the only
    one present)."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    try:
        lib = pkcs11_lib(module)
        tokens = [t for t in lib.get_tokens(token_label=token_label or None)
                  if token_serial is None or _text(t.serial) == token_serial]
    except (Pkcs11Error, pkcs11.PKCS11Error) as exc:
        raise TokenRefused(f"Không đọc được thư viện PKCS#11 {module}: {exc}",
                           f"Cannot use the PKCS#11 module {module}: {exc}") from None
    if not tokens:
        raise TokenRefused("Không tìm thấy USB token (chưa cắm hoặc sai nhãn/số sê-ri).",
                           "No token found (not plugged in, or wrong label/serial).")
    if len(tokens) > 1:
        names = ", ".join(f"{t.label} ({_text(t.serial)})" for t in tokens)
        raise TokenRefused(f"Có nhiều USB token: {names}. Vui lòng chọn một bằng --token-label hoặc --token-serial.",
                           f"Several tokens are present: {names}. Choose one with --token-label or --token-serial.")
    token = tokens[0]
    try:
        with token.open() as session:  # a public session: no login, so closing it logs nobody out
            ders = [bytes(obj[Attribute.VALUE])
                    for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})]
    except pkcs11.PKCS11Error as exc:
        raise TokenRefused(f"Không đọc được USB token {token.label}: {type(exc).__name__}",
                           f"Cannot read token {token.label}: {type(exc).__name__}") from None
    kind = " ".join(filter(None, [token.manufacturer_id.strip(), token.model.strip()]))
    return {"serial_number": _text(token.serial), "label": token.label, "kind": kind,
            "certificate": signing_certificate(ders)}


def _text(value) -> str:
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip()
