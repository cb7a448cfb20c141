"""Finding a key pair on a PKCS#11 token and reading its public half as a cryptography key."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..config import Pkcs11Settings
from .pkcs11_keys import Pkcs11Error


def spki(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def find_keypair(session, settings: Pkcs11Settings):
    """Find the private key by label and its public key; return (private, cryptography public key)."""
    import pkcs11

    label, token = settings.key_label, settings.token_label
    try:
        private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label)
    except pkcs11.NoSuchKey:
        raise Pkcs11Error(f"no private key labelled {label!r} on PKCS#11 token {token!r}") from None
    except pkcs11.MultipleObjectsReturned:
        raise Pkcs11Error(f"several private keys are labelled {label!r} on PKCS#11 token {token!r}") from None
    public = _load_pkcs11_public(session, label, private)
    if private.key_type == pkcs11.KeyType.RSA:
        # A stale public key left under the same label after a key was
        # regenerated would make every signature unverifiable; RSA private keys
        # expose their modulus, so check the pair matches.
        try:
            modulus = int.from_bytes(private[pkcs11.Attribute.MODULUS], "big")
        except pkcs11.PKCS11Error:
            modulus = None
        if modulus is not None and modulus != public.public_numbers().n:
            raise Pkcs11Error(f"public and private key labelled {label!r} on token {token!r} do not match")
    return private, public


def _load_pkcs11_public(session, label: str, private):
    """The public half as a cryptography key.

    Tokens do not always hold a public-key object labelled like the private key
    (keys imported with only a certificate, tools that label only one half), so
    fall back to the shared CKA_ID, then to the RSA private key's public
    attributes, then to a certificate with the same CKA_ID.
    """
    import pkcs11

    pub = None
    try:
        pub = session.get_key(object_class=pkcs11.ObjectClass.PUBLIC_KEY, label=label)
    except pkcs11.NoSuchKey:
        key_id = _attr(private, pkcs11.Attribute.ID)
        if key_id:
            try:
                pub = session.get_key(object_class=pkcs11.ObjectClass.PUBLIC_KEY, id=key_id)
            except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
                pub = None
    source = pub if pub is not None else private
    if private.key_type == pkcs11.KeyType.RSA:
        n = _attr(source, pkcs11.Attribute.MODULUS)
        e = _attr(source, pkcs11.Attribute.PUBLIC_EXPONENT)
        if n and e:
            return rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    elif private.key_type == pkcs11.KeyType.EC and pub is not None:
        return _ec_public_from_attrs(pub[pkcs11.Attribute.EC_PARAMS], pub[pkcs11.Attribute.EC_POINT])
    elif private.key_type != pkcs11.KeyType.EC:
        raise Pkcs11Error(f"key {label!r}: unsupported PKCS#11 key type {private.key_type!r}")
    key_id = _attr(private, pkcs11.Attribute.ID)
    if key_id:
        for obj in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE, pkcs11.Attribute.ID: key_id}):
            from cryptography import x509

            return x509.load_der_x509_certificate(bytes(obj[pkcs11.Attribute.VALUE])).public_key()
    raise Pkcs11Error(f"no public key or certificate found for key {label!r}")


def _attr(obj, attribute):
    import pkcs11

    try:
        return obj[attribute]
    except (pkcs11.AttributeTypeInvalid, pkcs11.AttributeSensitive, pkcs11.FunctionFailed):
        return None


def _ec_public_from_attrs(ec_params: bytes, ec_point: bytes):
    from asn1crypto import core
    from asn1crypto import keys as akeys
    from cryptography import x509

    params = akeys.ECDomainParameters.load(ec_params)
    if params.name != "named":
        raise Pkcs11Error("EC keys with explicit curve parameters are not supported")
    curve = ec.get_curve_for_oid(x509.ObjectIdentifier(params.chosen.dotted))()
    # PKCS#11 wants CKA_EC_POINT as a DER OCTET STRING; some tokens return the bare point.
    point = ec_point
    if ec_point[:1] == b"\x04" and len(ec_point) != 1 + 2 * ((curve.key_size + 7) // 8):
        point = core.OctetString.load(ec_point).native
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
