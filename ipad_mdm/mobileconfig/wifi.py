"""com.apple.wifi.managed."""

from __future__ import annotations

import re


from .spec import Key, _APPLE_UUID, _PayloadSpec, _b, _d, _fail, _i, _s, _strings
from .vpn import _tls_order


# --------------------------------------------------------------------------
# com.apple.wifi.managed
# --------------------------------------------------------------------------

_TLS_VERSIONS_EAP = ("1.0", "1.1", "1.2", "1.3")


def _check_ssid(value: str) -> str | None:
    # 802.11 limits an SSID to 1..32 octets.
    size = len(value.encode("utf-8"))
    return None if 1 <= size <= 32 else f"must be 1 to 32 bytes in UTF-8 (got {size})"


_EAP = _d(
    "EAPClientConfiguration",
    (
        Key(
            "AcceptEAPTypes",
            "array",
            required=True,
            min_items=1,  # local rule: an empty list cannot authenticate
            item=_i("EAPType", allowed=(13, 17, 18, 21, 23, 25, 43)),
        ),
        _s("UserName"),
        _s("UserPassword", secret=True),
        Key("PayloadCertificateAnchorUUID", "array", item=_s("uuid", pattern=_APPLE_UUID)),
        _strings("TLSTrustedCertificates"),
        _strings("TLSTrustedServerNames"),
        _b("TLSAllowTrustExceptions"),
        _b("TLSCertificateIsRequired"),
        _s("TTLSInnerAuthentication", allowed=("PAP", "EAP", "CHAP", "MSCHAP", "MSCHAPv2")),
        _s("TLSMinimumVersion", allowed=_TLS_VERSIONS_EAP),
        _s("TLSMaximumVersion", allowed=_TLS_VERSIONS_EAP),
        _s("OuterIdentity"),
        _b("EAPFASTUsePAC"),
        _b("EAPFASTProvisionPAC"),
        _b("EAPFASTProvisionPACAnonymously"),
        _i("EAPSIMNumberOfRANDs", allowed=(2, 3)),
        _s("SystemModeCredentialsSource"),
        _b("SystemModeUseOpenDirectoryCredentials"),
        _b("OneTimeUserPassword"),
    ),
)


def _wifi_rule(label: str, d: dict) -> None:
    # Apple: SSID_STR is optional only when DomainName (Hotspot 2.0) is given.
    if "SSID_STR" not in d and "DomainName" not in d:
        _fail(label, "SSID_STR", "is required unless DomainName is set")
    encryption = d.get("EncryptionType", "Any")
    if encryption == "None":
        # Apple: credentials only make sense when EncryptionType is not 'None'.
        for name in ("Password", "PayloadCertificateUUID", "EAPClientConfiguration"):
            if name in d:
                _fail(label, name, "must not be set when EncryptionType is 'None'")
    password = d.get("Password")
    if password is not None and encryption in ("WPA", "WPA2", "WPA3") and "EAPClientConfiguration" not in d:
        # IEEE 802.11i: a passphrase is 8..63 characters, or 64 hex digits.
        if not (8 <= len(password) <= 63 or re.fullmatch(r"[0-9A-Fa-f]{64}", password)):
            _fail(label, "Password", "must be 8 to 63 characters (or 64 hex digits) for WPA/WPA2/WPA3")
    eap = d.get("EAPClientConfiguration")
    if eap is not None:
        _tls_order(label, eap, "EAPClientConfiguration", _TLS_VERSIONS_EAP)
        # Apple: OuterIdentity "is required if 'TLSMinimumVersion' is '1.3'".
        if eap.get("TLSMinimumVersion") == "1.3" and "OuterIdentity" not in eap:
            _fail(label, "EAPClientConfiguration.OuterIdentity", "is required when TLSMinimumVersion is '1.3'")
    if d.get("ProxyType") == "Manual":
        for name in ("ProxyServer", "ProxyServerPort"):
            if name not in d:
                _fail(label, name, "is required when ProxyType is 'Manual'")


_WIFI = _PayloadSpec(
    "com.apple.wifi.managed",
    "Wi-Fi",
    (
        _b("AutoJoin"),
        _s("SSID_STR", check=_check_ssid),
        _b("HIDDEN_NETWORK"),
        _s("ProxyType", allowed=("None", "Manual", "Auto")),
        _s("EncryptionType", allowed=("WEP", "WPA", "WPA2", "WPA3", "Any", "None")),
        _s("Password", secret=True),
        _s("PayloadCertificateUUID", pattern=_APPLE_UUID),
        _EAP,
        _s("DisplayedOperatorName"),
        _s("DomainName"),
        Key("RoamingConsortiumOIs", "array", item=_s("OI", pattern=r"^([0-9A-Za-z]{6})|([0-9A-Za-z]{9})$")),
        _b("ServiceProviderRoamingEnabled"),
        _b("IsHotspot"),
        _s("HESSID"),
        _strings("NAIRealmNames"),
        Key("MCCAndMNCs", "array", item=_s("MCCAndMNC", pattern=r"^[0-9]{6}$")),
        _b("CaptiveBypass"),
        _d(
            "QoSMarkingPolicy",
            (
                _strings("QoSMarkingAllowListAppIdentifiers"),
                _strings("QoSMarkingWhitelistedAppIdentifiers"),
                _b("QoSMarkingAppleAudioVideoCalls"),
                _b("QoSMarkingEnabled"),
            ),
        ),
        Key("SetupModes", "array", item=_s("mode", allowed=("System", "Loginwindow"))),
        _b("EnableIPv6"),
        _b("TLSCertificateRequired"),
        _s("ProxyServer"),
        _i("ProxyServerPort", min=0, max=65535),
        _s("ProxyUsername"),
        _s("ProxyPassword", secret=True),
        _s("ProxyPACURL"),
        _b("ProxyPACFallbackAllowed"),
        _b("DisableAssociationMACRandomization"),
    ),
    rules=(_wifi_rule,),
)

