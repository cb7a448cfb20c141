"""com.apple.mdm and com.apple.security.scep."""

from __future__ import annotations

import re


from .spec import Key, _APPLE_UUID, _HTTPS_URL, _PayloadSpec, _b, _d, _i, _s, _strings


# --------------------------------------------------------------------------
# com.apple.mdm
# --------------------------------------------------------------------------

#: Every AccessRights bit Apple defines (1 ... 4096).
ACCESS_RIGHTS_ALL = 8191


def _check_access_rights(value: int) -> str | None:
    if value == 0:
        return "must not be 0"
    unknown = value & ~ACCESS_RIGHTS_ALL if value > 0 else value
    if unknown:
        return (
            "contains bits Apple does not define; allowed bits are "
            f"1, 2, 4, ..., 4096 (max {ACCESS_RIGHTS_ALL}) (got {value})"
        )
    if value & 2 and not value & 1:
        return f"must include 1 (inspect profiles) when 2 (install/remove profiles) is set (got {value})"
    if value & 128 and not value & 64:
        return (
            "must include 64 (inspect provisioning profiles) when 128 "
            f"(install/remove provisioning profiles) is set (got {value})"
        )
    return None


_MDM = _PayloadSpec(
    "com.apple.mdm",
    "MDM",
    (
        _s("IdentityCertificateUUID", required=True, pattern=_APPLE_UUID),
        # Apple: "The topic must begin with the 'com.apple.mgmt.' prefix."
        _s("Topic", required=True, pattern=r"com\.apple\.mgmt\..+"),
        _s("ServerURL", required=True, pattern=_HTTPS_URL),
        _s("CheckInURL", pattern=_HTTPS_URL),
        _b("SignMessage"),
        _i("AccessRights", check=_check_access_rights),
        _b("UseDevelopmentAPNS"),
        _s("ManagedAppleID"),
        _s("AssignedManagedAppleID"),
        _s("EnrollmentMode", allowed=("BYOD", "ADDE")),
        _strings("ServerURLPinningCertificateUUIDs"),
        _strings("CheckInURLPinningCertificateUUIDs"),
        _b("PinningRevocationCheckRequired"),
        Key(
            "ServerCapabilities",
            "array",
            unique=True,  # Apple: "A unique array of strings"
            item=_s(
                "item",
                allowed=(
                    "com.apple.mdm.per-user-connections",
                    "com.apple.mdm.bootstraptoken",
                    "com.apple.mdm.token",
                ),
            ),
        ),
        _b("CheckOutWhenRemoved"),
        _i("RequiredAppIDForMDM"),
        _b("PromptUserToAllowBootstrapTokenForAuthentication"),
    ),
    multiple=False,
)

# --------------------------------------------------------------------------
# com.apple.security.scep
# --------------------------------------------------------------------------

# Apple: OIDs as dotted numbers, with shortcuts C, L, ST, O, OU and CN.
_SUBJECT_SHORT_NAMES = ("C", "L", "ST", "O", "OU", "CN")
_DOTTED_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def _check_subject_pair(pair: list) -> str | None:
    oid, _value = pair
    if oid in _SUBJECT_SHORT_NAMES or _DOTTED_OID.fullmatch(oid):
        return None
    return (
        f"must start with a dotted OID or one of {', '.join(_SUBJECT_SHORT_NAMES)} (got {oid!r})"
    )


# Subject is an X.500 name: array of RDNs, each an array of [oid, value] pairs,
# e.g. [[["O", "Example"]], [["CN", "device"]]].
_SCEP_SUBJECT = Key(
    "Subject",
    "array",
    item=Key(
        "rdn",
        "array",
        min_items=1,
        item=Key(
            "pair", "array", item=_s("item"), min_items=2, max_items=2, check=_check_subject_pair
        ),
    ),
)

# Apple: "You can specify a single string or an array of strings for each key."
_SAN_VALUE = ("string", "array")
_SCEP = _PayloadSpec(
    "com.apple.security.scep",
    "SCEP",
    (
        _d(
            "PayloadContent",
            (
                # Local rule: SCEP runs over plain HTTP by design, but it must be a URL.
                _s("URL", required=True, pattern=r"https?://\S+"),
                _s("Name"),
                _SCEP_SUBJECT,
                _s("Challenge", secret=True),
                _i("Keysize", allowed=(1024, 2048, 4096)),
                _s("Key Type", allowed=("RSA",)),  # Apple: "Always 'RSA'."
                # Bitmask of 1 (signing) and 4 (encryption).
                _i("Key Usage", allowed=(0, 1, 4, 5)),
                Key("CAFingerprint", "data"),
                _i("Retries", min=0),  # local rule: a count is never negative
                _i("RetryDelay", min=0),
                _d(
                    "SubjectAltName",
                    (
                        Key("rfc822Name", _SAN_VALUE, item=_s("item")),
                        Key("dNSName", _SAN_VALUE, item=_s("item")),
                        Key("uniformResourceIdentifier", _SAN_VALUE, item=_s("item")),
                        Key("ntPrincipalName", _SAN_VALUE, item=_s("item")),
                    ),
                ),
                _b("KeyIsExtractable"),
                _b("AllowAllAppsAccess"),
            ),
            required=True,
        ),
    ),
)

