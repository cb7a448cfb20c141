"""Typed configuration-profile payload builders with data-driven validation.

Key names, types, allowed values (``rangelist`` / ``range``) and ``format``
patterns follow Apple's device-management reference (``mdm/profiles/*.yaml``
in apple/device-management).  The reference is deliberately *not* read at
runtime: the parts this office relies on are restated below as small spec
tables, so a change upstream becomes a reviewed code change here.

Rules that go beyond the reference (uppercase UUIDs, reverse-DNS identifiers,
the WireGuard app's own expectations, certificate parsing, ...) are marked
"local rule" with the reason next to them.

Public surface: :class:`PayloadError`, :class:`Payload`, :class:`Profile`,
:func:`validate_payload_dict` and one ``*_payload(...)`` builder per type.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import plistlib
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import pkcs12

__all__ = [
    "PayloadError",
    "Payload",
    "Profile",
    "validate_payload_dict",
    "mdm_payload",
    "scep_payload",
    "root_certificate_payload",
    "pkcs1_certificate_payload",
    "pkcs12_payload",
    "wireguard_vpn_payload",
    "ikev2_vpn_payload",
    "passcode_payload",
    "restrictions_payload",
    "wifi_payload",
    "ACCESS_RIGHTS_ALL",
    "WIREGUARD_IOS_BUNDLE_ID",
]


class PayloadError(ValueError):
    """A payload or profile breaks Apple's reference or a local rule.

    ``key`` is the dotted path of the offending key (``PayloadContent.Keysize``,
    ``EAPClientConfiguration.AcceptEAPTypes[0]``); the message always names it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


# --------------------------------------------------------------------------
# Spec tables and the generic engine
# --------------------------------------------------------------------------

# Reference type name -> (accepted Python types, phrase used in messages).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "a string"),
    "integer": ((int,), "an integer"),
    "boolean": ((bool,), "a boolean"),
    "data": ((bytes,), "data (bytes)"),
    "array": ((list,), "an array (list)"),
    "dictionary": ((dict,), "a dictionary"),
    "date": ((datetime,), "a date (datetime)"),
    "real": ((float, int), "a real number"),
}


@dataclass(frozen=True)
class Key:
    """Spec of one key, one array item, or the values of a free-form dictionary."""

    name: str
    type: str | tuple[str, ...]
    required: bool = False
    allowed: tuple[Any, ...] = ()  # Apple's ``rangelist``
    min: float | None = None  # Apple's ``range``
    max: float | None = None
    pattern: str | None = None  # Apple's ``format``; must match the whole string
    item: Key | None = None  # element spec of an array
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False
    fields: tuple[Key, ...] | None = None  # known keys of a dictionary
    values: Key | None = None  # spec of every value of a free-form dictionary
    open: bool = False  # dictionary may carry keys we do not know (vendor configs)
    secret: bool = False  # never echo the value in an error message
    check: Callable[[Any], str | None] | None = None  # extra check; returns a message


def _s(name: str, **kw: Any) -> Key:
    return Key(name, "string", **kw)


def _i(name: str, **kw: Any) -> Key:
    return Key(name, "integer", **kw)


def _b(name: str, **kw: Any) -> Key:
    return Key(name, "boolean", **kw)


def _flag(name: str, **kw: Any) -> Key:
    # Apple models many VPN switches as integers restricted to 0/1, not booleans.
    return Key(name, "integer", allowed=(0, 1), **kw)


def _strings(name: str, **kw: Any) -> Key:
    return Key(name, "array", item=_s("item"), **kw)


def _d(name: str, fields: Iterable[Key], **kw: Any) -> Key:
    return Key(name, "dictionary", fields=tuple(fields), **kw)


@dataclass(frozen=True)
class _PayloadSpec:
    payload_type: str
    label: str  # prefix of every error message, e.g. "SCEP"
    keys: tuple[Key, ...]
    rules: tuple[Callable[[str, dict], None], ...] = ()  # cross-key rules
    multiple: bool = True  # Apple's supportedOS.iOS.multiple


def _fail(label: str, path: str, message: str) -> None:
    raise PayloadError(path, f"{label}: {path} {message}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_type(value: Any, type_name: str) -> bool:
    # bool is a subclass of int in Python but a distinct plist type.
    if type_name in ("integer", "real") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[type_name][0])


def _shown(value: Any, key: Key) -> str:
    if key.secret:
        return "<redacted>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_value(label: str, key: Key, value: Any, path: str) -> None:
    types = (key.type,) if isinstance(key.type, str) else key.type
    matched = next((t for t in types if _is_type(value, t)), None)
    if matched is None:
        wanted = " or ".join(_TYPES[t][1] for t in types)
        _fail(label, path, f"must be {wanted} (got {type(value).__name__})")
    if key.allowed and value not in key.allowed:
        choices = ", ".join(str(a) for a in key.allowed)
        _fail(label, path, f"must be one of {choices} (got {_shown(value, key)})")
    if key.min is not None or key.max is not None:
        too_low = key.min is not None and value < key.min
        too_high = key.max is not None and value > key.max
        if too_low or too_high:
            if key.min is not None and key.max is not None:
                bound = f"between {_num(key.min)} and {_num(key.max)}"
            elif key.min is not None:
                bound = f"at least {_num(key.min)}"
            else:
                bound = f"at most {_num(key.max)}"
            _fail(label, path, f"must be {bound} (got {_shown(value, key)})")
    if key.pattern is not None and not re.fullmatch(key.pattern, value):
        _fail(label, path, f"must match the format {key.pattern} (got {_shown(value, key)})")
    if matched == "array":
        _check_array(label, key, value, path)
    elif matched == "dictionary":
        _check_dict(label, key.fields, value, path, values=key.values, open_=key.open)
    if key.check is not None:
        problem = key.check(value)
        if problem:
            _fail(label, path, problem)


def _check_array(label: str, key: Key, value: list, path: str) -> None:
    if len(value) < key.min_items:
        _fail(label, path, f"must have at least {key.min_items} item(s) (got {len(value)})")
    if key.max_items is not None and len(value) > key.max_items:
        _fail(label, path, f"must have at most {key.max_items} item(s) (got {len(value)})")
    if key.unique:
        seen: list[Any] = []
        for element in value:
            if element in seen:
                _fail(label, path, f"must not repeat items (got {_shown(element, key)} twice)")
            seen.append(element)
    if key.item is not None:
        for index, element in enumerate(value):
            _check_value(label, key.item, element, f"{path}[{index}]")


def _check_dict(
    label: str,
    fields: Sequence[Key] | None,
    value: dict,
    path: str,
    *,
    values: Key | None = None,
    open_: bool = False,
    owner: str | None = None,
) -> None:
    known = {k.name: k for k in fields or ()}
    for name in value:
        if not isinstance(name, str):
            _fail(label, path or "payload", f"keys must be strings (got {name!r})")
    for k in fields or ():
        if k.required and k.name not in value:
            _fail(label, _join(path, k.name), "is required")
    for name, element in value.items():
        spec = known.get(name, values)
        if spec is None:
            if open_:
                continue
            # Unknown keys are refused: a typo ("allowCammera") would otherwise
            # be silently ignored by the device and leave a setting unenforced.
            where = owner or path
            _fail(label, _join(path, name), f"is not a known key of {where}")
        _check_value(label, spec, element, _join(path, name))


# --------------------------------------------------------------------------
# Shared formats
# --------------------------------------------------------------------------

# Apple's ``format`` for references to certificate payloads.
_APPLE_UUID = r"^[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}$"
# Local rule: we emit canonical uppercase UUIDs so that profile diffs and the
# database (which stores them as text) never disagree on case.
_UPPER_UUID = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
# Local rule: Apple asks for a "reverse-DNS style" identifier; require at least
# two dot-separated labels and no whitespace.
_REVERSE_DNS = r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+"
_HTTPS_URL = r"^https://.*$"  # Apple's format for the MDM URLs

_COMMON_KEYS: tuple[Key, ...] = (
    _s("PayloadType", required=True),
    _s("PayloadIdentifier", required=True, pattern=_REVERSE_DNS),
    _s("PayloadUUID", required=True, pattern=_UPPER_UUID),
    _i("PayloadVersion", required=True, allowed=(1,)),
    # Apple marks this optional; we require it so staff can tell payloads apart.
    _s("PayloadDisplayName", required=True),
    _s("PayloadDescription"),
    _s("PayloadOrganization"),
)

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

# --------------------------------------------------------------------------
# Certificates: com.apple.security.root / .pkcs1 / .pkcs12
# --------------------------------------------------------------------------


def _load_der(value: bytes) -> x509.Certificate:
    if value.lstrip().startswith(b"-----BEGIN"):
        raise ValueError("is PEM; pass the DER encoding (cert.public_bytes(Encoding.DER))")
    try:
        return x509.load_der_x509_certificate(value)
    except ValueError as exc:
        raise ValueError(f"is not a DER-encoded X.509 certificate ({exc})") from None


def _check_der_certificate(value: bytes) -> str | None:
    try:
        _load_der(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_root_certificate(value: bytes) -> str | None:
    # Local rule: a "root" payload makes the device trust everything the
    # certificate signs, so it must really be a self-signed CA certificate.
    try:
        cert = _load_der(value)
    except ValueError as exc:
        return str(exc)
    if cert.subject != cert.issuer:
        return "is not a root certificate (subject and issuer differ); use com.apple.security.pkcs1"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and not constraints.ca:
        return "is not a CA certificate (basicConstraints CA is false)"
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return "is not self-signed (its signature does not verify with its own key)"
    return None


def _cert_keys(check: Callable[[bytes], str | None]) -> tuple[Key, ...]:
    return (
        _s("PayloadCertificateFileName"),
        Key("PayloadContent", "data", required=True, check=check),
    )


_ROOT = _PayloadSpec("com.apple.security.root", "Root certificate", _cert_keys(_check_root_certificate))
_PKCS1 = _PayloadSpec(
    "com.apple.security.pkcs1", "PKCS#1 certificate", _cert_keys(_check_der_certificate)
)


def _pkcs12_rule(label: str, d: dict) -> None:
    # Without a password the device prompts the user, so we cannot check more.
    if "Password" not in d:
        return
    try:
        key, cert, _extra = pkcs12.load_key_and_certificates(
            d["PayloadContent"], d["Password"].encode("utf-8")
        )
    except (ValueError, TypeError):
        _fail(
            label,
            "PayloadContent",
            "could not be opened with Password (wrong password or not PKCS#12 data)",
        )
        return
    if key is None or cert is None:
        # Apple: "Password-protected identity certificate" - key and certificate.
        _fail(label, "PayloadContent", "must contain a private key and its certificate")


_PKCS12 = _PayloadSpec(
    "com.apple.security.pkcs12",
    "PKCS#12",
    (
        _s("PayloadCertificateFileName"),
        Key("PayloadContent", "data", required=True, secret=True),
        _s("Password", secret=True),
        _b("AllowAllAppsAccess"),
        _b("KeyIsExtractable"),
    ),
    rules=(_pkcs12_rule,),
)

# --------------------------------------------------------------------------
# WireGuard wg-quick text, as the official WireGuard Apple app parses it
# (wireguard-apple, TunnelConfiguration+WgQuickConfig.swift and MOBILECONFIG.md)
# --------------------------------------------------------------------------

WIREGUARD_IOS_BUNDLE_ID = "com.wireguard.ios"
_WIREGUARD_BUNDLE_IDS = (WIREGUARD_IOS_BUNDLE_ID, "com.wireguard.macos")
_WG_INTERFACE_KEYS = {"privatekey", "listenport", "address", "dns", "mtu"}
_WG_PEER_KEYS = {"publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive"}
_WG_REPEATABLE = {"address", "allowedips", "dns"}
# Documented by the app as unsupported in mobileconfig; the app refuses them.
_WG_UNSUPPORTED = {"fwmark", "table", "preup", "postup", "predown", "postdown", "saveconfig"}


@dataclass
class _WgSection:
    kind: str  # "interface" or "peer"
    line: int
    attrs: dict[str, str] = field(default_factory=dict)


def _wg_sections(text: str) -> list[_WgSection]:
    """Split wg-quick text into sections; raise ValueError naming the line."""
    sections: list[_WgSection] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        lowered = line.lower()
        if lowered in ("[interface]", "[peer]"):
            sections.append(_WgSection(lowered[1:-1], number))
            continue
        if "=" not in line:
            raise ValueError(f"line {number}: expected 'Key = Value' or a section header")
        if not sections:
            raise ValueError(f"line {number}: key outside [Interface]/[Peer] section")
        name, value = (part.strip() for part in line.split("=", 1))
        key = name.lower()
        section = sections[-1]
        if key in _WG_UNSUPPORTED:
            raise ValueError(f"line {number}: {name} is not supported by the WireGuard app")
        allowed = _WG_INTERFACE_KEYS if section.kind == "interface" else _WG_PEER_KEYS
        if key not in allowed:
            raise ValueError(f"line {number}: unknown key {name!r} in [{section.kind.title()}]")
        if key in section.attrs:
            if key not in _WG_REPEATABLE:
                raise ValueError(f"line {number}: {name} given twice in one section")
            value = f"{section.attrs[key]},{value}"
        section.attrs[key] = value
    return sections


def _wg_key_ok(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _wg_u16(text: str) -> bool:
    return text.isdigit() and int(text) <= 65535


def _wg_endpoint(text: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%a-zA-Z]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text)
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    return (host, port) if port <= 65535 else None


def _wg_parse(text: str) -> list[_WgSection]:
    """Validate wg-quick text the way the WireGuard app would; never echo keys."""
    sections = _wg_sections(text)
    interfaces = [s for s in sections if s.kind == "interface"]
    peers = [s for s in sections if s.kind == "peer"]
    if len(interfaces) != 1:
        raise ValueError(f"needs exactly one [Interface] section (got {len(interfaces)})")
    iface = interfaces[0]
    if "privatekey" not in iface.attrs:
        raise ValueError(f"[Interface] at line {iface.line} has no PrivateKey")
    if not _wg_key_ok(iface.attrs["privatekey"]):
        raise ValueError(f"[Interface] at line {iface.line}: PrivateKey is not a base64 32-byte key")
    for name in ("listenport", "mtu"):
        if name in iface.attrs and not _wg_u16(iface.attrs[name]):
            raise ValueError(f"[Interface] at line {iface.line}: invalid {name} {iface.attrs[name]!r}")
    for address in _wg_list(iface.attrs.get("address", "")):
        try:
            ipaddress.ip_interface(address)
        except ValueError:
            raise ValueError(f"[Interface] at line {iface.line}: invalid Address {address!r}") from None
    if not peers:
        # Local rule: the app accepts it, but a tunnel without peers is useless.
        raise ValueError("needs at least one [Peer] section")
    seen_keys: set[str] = set()
    for peer in peers:
        where = f"[Peer] at line {peer.line}"
        public = peer.attrs.get("publickey")
        if public is None:
            raise ValueError(f"{where} has no PublicKey")
        if not _wg_key_ok(public):
            raise ValueError(f"{where}: PublicKey is not a base64 32-byte key")
        if public in seen_keys:
            raise ValueError(f"{where}: PublicKey repeats an earlier peer")
        seen_keys.add(public)
        if "presharedkey" in peer.attrs and not _wg_key_ok(peer.attrs["presharedkey"]):
            raise ValueError(f"{where}: PresharedKey is not a base64 32-byte key")
        for network in _wg_list(peer.attrs.get("allowedips", "")):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{where}: invalid AllowedIPs entry {network!r}") from None
        if "endpoint" in peer.attrs and _wg_endpoint(peer.attrs["endpoint"]) is None:
            raise ValueError(f"{where}: invalid Endpoint {peer.attrs['endpoint']!r}")
        keepalive = peer.attrs.get("persistentkeepalive")
        if keepalive is not None and not _wg_u16(keepalive):
            raise ValueError(f"{where}: invalid PersistentKeepalive {keepalive!r}")
    return sections


def _wg_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _check_wg_quick(text: str) -> str | None:
    try:
        _wg_parse(text)
    except ValueError as exc:
        return f"is not a valid wg-quick configuration: {exc}"
    return None


# --------------------------------------------------------------------------
# com.apple.vpn.managed
# --------------------------------------------------------------------------

_ON_DEMAND_RULE = _d(
    "rule",
    (
        _s(
            "Action",
            required=True,
            allowed=("Allow", "Connect", "Disconnect", "EvaluateConnection", "Ignore"),
        ),
        Key(
            "ActionParameters",
            "array",
            item=_d(
                "parameter",
                (
                    _strings("Domains", required=True),
                    _s("DomainAction", required=True, allowed=("ConnectIfNeeded", "NeverConnect")),
                    _strings("RequiredDNSServers"),
                    _s("RequiredURLStringProbe"),
                ),
            ),
        ),
        _strings("DNSDomainMatch"),
        _strings("DNSServerAddressMatch"),
        _s("InterfaceTypeMatch", allowed=("Ethernet", "WiFi", "Cellular")),
        _strings("SSIDMatch"),
        _s("URLStringProbe"),
    ),
)
_ON_DEMAND_RULES = Key("OnDemandRules", "array", item=_ON_DEMAND_RULE)

# Keys shared by the VPN and IKEv2 dictionaries.
_TUNNEL_COMMON: tuple[Key, ...] = (
    _s("ProviderBundleIdentifier"),
    _s("ProviderDesignatedRequirement"),
    _flag("DisconnectOnIdle"),
    _i("DisconnectOnIdleTimer", min=0),  # local rule: seconds are never negative
    _s("ProviderType", allowed=("packet-tunnel", "app-proxy")),
    _flag("IncludeAllNetworks"),
    _flag("EnforceRoutes"),
    _flag("ExcludeLocalNetworks"),
    _flag("ExcludeCellularServices"),
    _flag("ExcludeAPNs"),
    _flag("ExcludeDeviceCommunication"),
    _flag("OnDemandEnabled"),
    _flag("OnDemandUserOverrideDisabled"),
    _ON_DEMAND_RULES,
)

_VPN_DICT = _d(
    "VPN",
    (
        _s("AuthenticationMethod", allowed=("Password", "Certificate", "Password+Certificate")),
        _s("PayloadCertificateUUID", pattern=_APPLE_UUID),
        _s("Password", secret=True),
        # Not in Apple's YAML for the VPN dictionary, but required by the WireGuard
        # app (MOBILECONFIG.md) and shown as the server in Settings > VPN.
        _s("RemoteAddress"),
        _strings("OnDemandMatchDomainsAlways"),
        _strings("OnDemandMatchDomainsNever"),
        _strings("OnDemandMatchDomainsOnRetry"),
        *_TUNNEL_COMMON,
    ),
)

_SA_PARAMETERS: tuple[Key, ...] = (
    _s(
        "EncryptionAlgorithm",
        allowed=("DES", "3DES", "AES-128", "AES-256", "AES-128-GCM", "AES-256-GCM", "ChaCha20Poly1305"),
    ),
    _s("IntegrityAlgorithm", allowed=("SHA1-96", "SHA1-160", "SHA2-256", "SHA2-384", "SHA2-512")),
    _i("DiffieHellmanGroup", allowed=(1, 2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 31, 32)),
    _i("LifeTimeInMinutes", min=10, max=1440),
)
_TLS_VERSIONS_IKE = ("1.0", "1.1", "1.2")

_IKEV2_DICT = _d(
    "IKEv2",
    (
        _s("RemoteAddress", required=True),
        _s("LocalIdentifier", required=True),
        _s("RemoteIdentifier", required=True),
        _s("AuthenticationMethod", required=True, allowed=("None", "SharedSecret", "Certificate")),
        _s("CertificateType", allowed=("RSA", "ECDSA256", "ECDSA384", "ECDSA521", "RSA-PSS")),
        # Local rule: same format Apple gives for other certificate references.
        _s("PayloadCertificateUUID", pattern=_APPLE_UUID),
        _s("Password", secret=True),
        _s("SharedSecret", secret=True),
        _flag("ExtendedAuthEnabled"),
        _s("AuthName"),
        _s("AuthPassword", secret=True),
        _s("DeadPeerDetectionRate", allowed=("None", "Low", "Medium", "High")),
        _s("ServerCertificateIssuerCommonName"),
        _s("ServerCertificateCommonName"),
        _s("TLSMinimumVersion", allowed=_TLS_VERSIONS_IKE),
        _s("TLSMaximumVersion", allowed=_TLS_VERSIONS_IKE),
        _flag("UseConfigurationAttributeInternalIPSubnet"),
        _flag("DisableMOBIKE"),
        _flag("DisableRedirect"),
        _flag("NATKeepAliveOffloadEnable"),
        _i("NATKeepAliveInterval", min=20),  # Apple: "The minimum value is 20 seconds."
        _flag("EnablePFS"),
        _flag("EnableCertificateRevocationCheck"),
        _flag("EnableFallback"),
        _i("MTU", min=1280, max=1400),
        Key("PPK", "data", secret=True),
        _s("PPKIdentifier"),
        _flag("PPKMandatory"),
        _d("IKESecurityAssociationParameters", _SA_PARAMETERS),
        _d("ChildSecurityAssociationParameters", _SA_PARAMETERS),
        *_TUNNEL_COMMON,
    ),
)

_VPN_DNS = _d(
    "DNS",
    (
        _s("DNSProtocol", required=True, allowed=("Cleartext", "HTTPS", "TLS")),
        _s("ServerURL"),
        _s("ServerName"),
        _strings("ServerAddresses", required=True),
        _strings("SearchDomains"),
        _s("DomainName"),
        _strings("SupplementalMatchDomains"),
        _flag("SupplementalMatchDomainsNoSearch"),
        _s("PayloadCertificateUUID", pattern=_APPLE_UUID),
    ),
)

def _vpn_rule(label: str, d: dict) -> None:
    vpn_type = d["VPNType"]
    sub_type = d.get("VPNSubType")
    # Apple: VPNSubType is required for 'VPN' and 'TransparentProxy'.
    if vpn_type in ("VPN", "TransparentProxy") and not sub_type:
        _fail(label, "VPNSubType", f"is required when VPNType is {vpn_type!r}")
    # Apple: the dictionary named after the type carries its settings.
    if vpn_type in ("IKEv2", "AlwaysOn", "TransparentProxy") and vpn_type not in d:
        _fail(label, vpn_type, f"is required when VPNType is {vpn_type!r}")
    if vpn_type == "IKEv2" and sub_type not in (None, ""):
        _fail(label, "VPNSubType", f"must be empty when VPNType is 'IKEv2' (got {sub_type!r})")
    if "IKEv2" in d:
        _ikev2_rule(label, d["IKEv2"])
    if sub_type in _WIREGUARD_BUNDLE_IDS:
        _wireguard_rule(label, d)
    dns = d.get("DNS")
    if dns is not None:
        if dns["DNSProtocol"] == "HTTPS" and "ServerURL" not in dns:
            _fail(label, "DNS.ServerURL", "is required when DNSProtocol is 'HTTPS'")
        if dns["DNSProtocol"] == "TLS" and "ServerName" not in dns:
            _fail(label, "DNS.ServerName", "is required when DNSProtocol is 'TLS'")


def _ikev2_rule(label: str, ike: dict) -> None:
    method = ike["AuthenticationMethod"]
    if method == "Certificate" and "PayloadCertificateUUID" not in ike:
        _fail(label, "IKEv2.PayloadCertificateUUID", "is required when AuthenticationMethod is 'Certificate'")
    if method == "SharedSecret" and "SharedSecret" not in ike:
        _fail(label, "IKEv2.SharedSecret", "is required when AuthenticationMethod is 'SharedSecret'")
    # Apple: "If this key is included, the system requires a value for
    # 'ServerCertificateIssuerCommonName'."
    if "CertificateType" in ike and "ServerCertificateIssuerCommonName" not in ike:
        _fail(label, "IKEv2.ServerCertificateIssuerCommonName", "is required when CertificateType is set")
    if ("PPK" in ike) != ("PPKIdentifier" in ike):
        missing = "PPKIdentifier" if "PPK" in ike else "PPK"
        _fail(label, f"IKEv2.{missing}", "is required when PPK / PPKIdentifier is set (they go together)")
    _tls_order(label, ike, "IKEv2", _TLS_VERSIONS_IKE)


def _wireguard_rule(label: str, d: dict) -> None:
    # The WireGuard app reads its tunnel from VendorConfig.WgQuickConfig and
    # needs VPN.RemoteAddress (non-empty) and VPN.AuthenticationMethod 'Password'.
    if d["VPNType"] != "VPN":
        _fail(label, "VPNType", f"must be 'VPN' for the WireGuard app (got {d['VPNType']!r})")
    if "WgQuickConfig" not in d.get("VendorConfig", {}):
        _fail(label, "VendorConfig.WgQuickConfig", "is required for the WireGuard app")
    vpn = d.get("VPN")
    if vpn is None:
        _fail(label, "VPN", "is required for the WireGuard app")
        return
    if not vpn.get("RemoteAddress", "").strip():
        _fail(label, "VPN.RemoteAddress", "is required (non-empty) for the WireGuard app")
    if vpn.get("AuthenticationMethod", "Password") != "Password":
        _fail(
            label,
            "VPN.AuthenticationMethod",
            f"must be 'Password' for the WireGuard app (got {vpn['AuthenticationMethod']!r})",
        )


def _tls_order(label: str, d: dict, prefix: str, order: tuple[str, ...]) -> None:
    low, high = d.get("TLSMinimumVersion"), d.get("TLSMaximumVersion")
    if low is not None and high is not None and order.index(low) > order.index(high):
        _fail(label, f"{prefix}.TLSMinimumVersion", f"must not exceed TLSMaximumVersion ({low} > {high})")


_VPN = _PayloadSpec(
    "com.apple.vpn.managed",
    "VPN",
    (
        _s(
            "VPNType",
            required=True,
            allowed=("VPN", "L2TP", "IPSec", "IKEv2", "AlwaysOn", "TransparentProxy"),
        ),
        _s("VPNSubType"),
        _s("UserDefinedName", required=True),
        # Vendor dictionaries carry vendor keys (WireGuard's WgQuickConfig), so
        # unknown keys are accepted here; the ones we know are type-checked.
        _d(
            "VendorConfig",
            (
                _s("Realm"),
                _s("Role"),
                _s("Group"),
                _s("LoginGroupOrDomain"),
                _s("WgQuickConfig", secret=True, check=_check_wg_quick),
            ),
            open=True,
        ),
        _VPN_DICT,
        _IKEV2_DICT,
        _VPN_DNS,
        _d("IPv4", (_flag("OverridePrimary"),)),
        # Transports this office does not deploy: only checked to be dictionaries.
        Key("PPP", "dictionary", open=True),
        Key("IPSec", "dictionary", open=True),
        Key("Proxies", "dictionary", open=True),
        Key("AlwaysOn", "dictionary", open=True),
        Key("TransparentProxy", "dictionary", open=True),
    ),
    rules=(_vpn_rule,),
)

# --------------------------------------------------------------------------
# com.apple.mobiledevice.passwordpolicy
# --------------------------------------------------------------------------


def _passcode_rule(label: str, d: dict) -> None:
    # Apple: minutesUntilFailedLoginReset "requires setting 'maxFailedAttempts'".
    if "minutesUntilFailedLoginReset" in d and "maxFailedAttempts" not in d:
        _fail(label, "maxFailedAttempts", "is required when minutesUntilFailedLoginReset is set")


_PASSCODE = _PayloadSpec(
    "com.apple.mobiledevice.passwordpolicy",
    "Passcode",
    (
        _b("allowSimple"),
        _b("forcePIN"),
        _i("maxFailedAttempts", min=2, max=11),
        _i("maxInactivity", min=0, max=15),
        _i("maxPINAgeInDays", min=0, max=730),
        _i("minComplexChars", min=0, max=4),
        _i("minLength", min=0, max=16),
        _b("requireAlphanumeric"),
        _i("pinHistory", min=1, max=50),
        _i("maxGracePeriod", min=0),  # local rule: minutes are never negative
        _i("minutesUntilFailedLoginReset", min=0),
        _b("changeAtNextAuth"),
        _d(
            "customRegex",
            (
                _s(
                    "passwordContentRegex",
                    required=True,
                    check=lambda v: "must not exceed 2048 characters" if len(v) > 2048 else None,
                ),
                Key("passwordContentDescription", "dictionary", values=_s("description")),
            ),
        ),
    ),
    rules=(_passcode_rule,),
)

# --------------------------------------------------------------------------
# com.apple.applicationaccess (every key of Apple's reference)
# --------------------------------------------------------------------------

_RESTRICTION_BOOLEANS = """
allowAccountModification allowActivityContinuation allowAddingGameCenterFriends
allowAirDrop allowAirPlayIncomingRequests allowAirPrint allowAirPrintCredentialsStorage
allowAirPrintiBeaconDiscovery allowAppCellularDataModification allowAppClips
allowAppInstallation allowApplePersonalizedAdvertising allowAppRemoval allowAppsToBeHidden
allowAppsToBeLocked allowARDRemoteManagementModification allowAssistant
allowAssistantUserGeneratedContent allowAssistantWhileLocked allowAutoCorrection
allowAutoDim allowAutomaticAppDownloads allowAutomaticScreenSaver allowAutoUnlock
allowBluetoothModification allowBluetoothSharingModification allowBookstore
allowBookstoreErotica allowCallRecording allowCamera allowCellularPlanModification
allowChat allowCloudAddressBook allowCloudBackup allowCloudBookmarks allowCloudCalendar
allowCloudDesktopAndDocuments allowCloudDocumentSync allowCloudFreeform
allowCloudKeychainSync allowCloudMail allowCloudNotes allowCloudPhotoLibrary
allowCloudPrivateRelay allowCloudReminders allowContentCaching allowContinuousPathKeyboard
allowDefinitionLookup allowDeviceNameModification allowDeviceSleep
allowDiagnosticSubmission allowDiagnosticSubmissionModification allowDictation
allowEnablingRestrictions allowEnterpriseAppTrust allowEnterpriseBookBackup
allowEnterpriseBookMetadataSync allowEraseContentAndSettings allowESIMModification
allowESIMOutgoingTransfers allowExplicitContent allowFileSharingModification
allowFilesNetworkDriveAccess allowFilesUSBDriveAccess allowFindMyDevice allowFindMyFriends
allowFindMyFriendsModification allowFingerprintForUnlock allowFingerprintModification
allowGameCenter allowGenmoji allowGlobalBackgroundFetchWhenRoaming allowHostPairing
allowImagePlayground allowImageWand allowInAppPurchases allowInternetSharingModification
allowiPhoneMirroring allowiPhoneWidgetsOnMac allowiTunes allowiTunesFileSharing
allowKeyboardShortcuts allowLiveVoicemail allowLocalUserCreation
allowLockScreenControlCenter allowLockScreenNotificationsView allowLockScreenTodayView
allowMailPrivacyProtection allowMailSummary allowManagedAppsCloudSync
allowManagedToWriteUnmanagedContacts allowMarketplaceAppInstallation
allowMediaSharingModification allowMultiplayerGaming allowMusicService allowNews allowNFC
allowNotificationsModification allowOpenFromManagedToUnmanaged
allowOpenFromUnmanagedToManaged allowOTAPKIUpdates allowPairedWatch
allowPassbookWhileLocked allowPasscodeModification allowPasswordAutoFill
allowPasswordProximityRequests allowPasswordSharing allowPersonalHotspotModification
allowPersonalizedHandwritingResults allowPhotoStream allowPodcasts allowPredictiveKeyboard
allowPrinterSharingModification allowProximitySetupToNewDevice allowRadioService
allowRapidSecurityResponseInstallation allowRapidSecurityResponseRemoval allowRCSMessaging
allowRemoteAppleEventsModification allowRemoteAppPairing allowRemoteScreenObservation
allowSafari allowScreenShot allowSharedDeviceTemporarySession allowSharedStream
allowSpellCheck allowSpotlightInternetResults allowStartupDiskModification
allowSystemAppRemoval allowTimeMachineBackup allowUIAppInstallation
allowUIConfigurationProfileInstallation allowUniversalControl
allowUnmanagedToReadManagedContacts allowUnpairedExternalBootToRecovery
allowUntrustedTLSPrompt allowUSBRestrictedMode allowVideoConferencing allowVoiceDialing
allowVPNCreation allowWallpaperModification allowWebDistributionAppInstallation
allowWritingTools forceAirDropUnmanaged forceAirPlayIncomingRequestsPairingPassword
forceAirPlayOutgoingRequestsPairingPassword forceAirPrintTrustedTLSRequirement
forceAssistantProfanityFilter forceAuthenticationBeforeAutoFill forceAutomaticDateAndTime
forceBypassScreenCaptureAlert forceClassroomAutomaticallyJoinClasses
forceClassroomRequestPermissionToLeaveClasses forceClassroomUnpromptedAppAndDeviceLock
forceClassroomUnpromptedScreenObservation forceDelayedAppSoftwareUpdates
forceDelayedMajorSoftwareUpdates forceDelayedSoftwareUpdates forceEncryptedBackup
forceITunesStorePasswordEntry forceLimitAdTracking forceOnDeviceOnlyDictation
forceOnDeviceOnlyTranslation forcePreserveESIMOnErase forceWatchWristDetection
forceWiFiPowerOn forceWiFiToAllowedNetworksOnly forceWiFiWhitelisting
requireManagedPasteboard safariAllowAutoFill safariAllowJavaScript safariAllowPopups
safariForceFraudWarning
""".split()

_RESTRICTIONS = _PayloadSpec(
    "com.apple.applicationaccess",
    "Restrictions",
    (
        *(_b(name) for name in _RESTRICTION_BOOLEANS),
        _strings("allowListedAppBundleIDs"),
        _strings("autonomousSingleAppModePermittedAppIDs"),
        _strings("blacklistedAppBundleIDs"),
        _strings("blockedAppBundleIDs"),
        _strings("whitelistedAppBundleIDs"),
        _i("enforcedFingerprintTimeout"),
        _i("enforcedSoftwareUpdateDelay", min=1, max=90),
        _i("enforcedSoftwareUpdateMajorOSDeferredInstallDelay", min=1, max=90),
        _i("enforcedSoftwareUpdateMinorOSDeferredInstallDelay", min=1, max=90),
        _i("enforcedSoftwareUpdateNonOSDeferredInstallDelay", min=1, max=90),
        _i("ratingApps", min=0, max=1000),
        _i("ratingMovies", min=0, max=1000),
        _i("ratingTVShows", min=0, max=1000),
        _s("ratingRegion", allowed=("us", "au", "ca", "de", "fr", "ie", "jp", "nz", "gb")),
        Key("safariAcceptCookies", "real", allowed=(0, 1, 1.5, 2)),
    ),
)

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

_SPECS: dict[str, _PayloadSpec] = {
    spec.payload_type: spec
    for spec in (_MDM, _SCEP, _ROOT, _PKCS1, _PKCS12, _VPN, _PASSCODE, _RESTRICTIONS, _WIFI)
}

# Payload types whose UUID may be referenced as an identity / as a certificate.
_IDENTITY_TYPES = ("com.apple.security.pkcs12", "com.apple.security.scep", "com.apple.security.acme")
_CERTIFICATE_TYPES = _IDENTITY_TYPES + (
    "com.apple.security.root",
    "com.apple.security.pkcs1",
    "com.apple.security.pem",
)

# --------------------------------------------------------------------------
# Payload and validation entry point
# --------------------------------------------------------------------------


class Payload:
    """A validated payload; build one with a ``*_payload`` builder or
    :func:`validate_payload_dict`."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = _validated(data)

    @property
    def payload_type(self) -> str:
        return self._data["PayloadType"]

    @property
    def identifier(self) -> str:
        return self._data["PayloadIdentifier"]

    @property
    def uuid(self) -> str:
        return self._data["PayloadUUID"]

    @property
    def display_name(self) -> str:
        return self._data["PayloadDisplayName"]

    def to_dict(self) -> dict[str, Any]:
        """A deep copy, ready for :mod:`plistlib`."""
        return copy.deepcopy(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Payload) and other._data == self._data

    __hash__ = None  # type: ignore[assignment]  # mutable-content equality

    def __repr__(self) -> str:
        return f"Payload({self.payload_type!r}, identifier={self.identifier!r}, uuid={self.uuid!r})"


def _validated(data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise PayloadError("", f"payload must be a dictionary (got {type(data).__name__})")
    payload_type = data.get("PayloadType")
    if payload_type is None:
        raise PayloadError("PayloadType", "payload: PayloadType is required")
    spec = _SPECS.get(payload_type) if isinstance(payload_type, str) else None
    if spec is None:
        supported = ", ".join(sorted(_SPECS))
        raise PayloadError(
            "PayloadType",
            f"payload: PayloadType {payload_type!r} is not supported (supported: {supported})",
        )
    # Copy first so later edits to the caller's dict cannot bypass validation.
    copied = copy.deepcopy(dict(data))
    _check_dict(spec.label, _COMMON_KEYS + spec.keys, copied, "", owner=spec.payload_type)
    for rule in spec.rules:
        rule(spec.label, copied)
    return copied


def validate_payload_dict(d: Mapping[str, Any]) -> Payload:
    """Validate an arbitrary payload dict by its PayloadType; raise PayloadError."""
    return Payload(d)


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def _uuid_text(value: str | uuidlib.UUID | None) -> str:
    if value is None:
        return str(uuidlib.uuid4()).upper()
    try:
        return str(value if isinstance(value, uuidlib.UUID) else uuidlib.UUID(value)).upper()
    except (ValueError, AttributeError, TypeError):
        raise PayloadError("PayloadUUID", f"payload: PayloadUUID must be a UUID (got {value!r})") from None


def _build(
    payload_type: str,
    *,
    identifier: str,
    display_name: str,
    uuid: str | uuidlib.UUID | None,
    description: str | None,
    organization: str | None,
    keys: Mapping[str, Any],
    extra: Mapping[str, Any] | None,
) -> Payload:
    d: dict[str, Any] = {
        "PayloadType": payload_type,
        "PayloadIdentifier": identifier,
        "PayloadUUID": _uuid_text(uuid),
        "PayloadVersion": 1,
        "PayloadDisplayName": display_name,
    }
    if description is not None:
        d["PayloadDescription"] = description
    if organization is not None:
        d["PayloadOrganization"] = organization
    d.update(_merge(keys, extra, _SPECS[payload_type].label))
    return Payload(d)


_RESERVED_KEYS = frozenset(k.name for k in _COMMON_KEYS)


def _merge(keys: Mapping[str, Any], extra: Mapping[str, Any] | None, label: str) -> dict[str, Any]:
    """Typed arguments (None = omit) plus ``extra`` keys, which must not clash."""
    merged = {k: v for k, v in keys.items() if v is not None}
    for name, value in (extra or {}).items():
        if name in merged or name in _RESERVED_KEYS:
            raise PayloadError(name, f"{label}: {name} is set by an argument; do not repeat it in extra")
        merged[name] = value
    return merged


def _plist_value(value: Any) -> Any:
    """Tuples -> lists and Mappings -> dicts, recursively; everything else as is.

    Strings are left alone (``list("CN")`` would silently become ``["C", "N"]``),
    and wrong types are left for the validator to name.
    """
    if isinstance(value, (list, tuple)):
        return [_plist_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plist_value(v) for k, v in value.items()}
    return value


def _flag_value(value: bool | None) -> int | None:
    # Apple types these VPN switches as integer 0/1.
    return None if value is None else int(bool(value))


def mdm_payload(
    *,
    identifier: str,
    display_name: str,
    server_url: str,
    topic: str,
    identity_certificate_uuid: str,
    check_in_url: str | None = None,
    sign_message: bool | None = None,
    access_rights: int = ACCESS_RIGHTS_ALL,
    check_out_when_removed: bool | None = None,
    server_capabilities: Sequence[str] | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """com.apple.mdm: enrolls the device with this server."""
    keys = {
        "ServerURL": server_url,
        "CheckInURL": check_in_url,
        "Topic": topic,
        "IdentityCertificateUUID": identity_certificate_uuid,
        "SignMessage": sign_message,
        "AccessRights": access_rights,
        "CheckOutWhenRemoved": check_out_when_removed,
        "ServerCapabilities": _plist_value(server_capabilities),
    }
    return _build(
        "com.apple.mdm", identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization, keys=keys, extra=extra,
    )


def scep_payload(
    *,
    identifier: str,
    display_name: str,
    url: str,
    subject: Sequence[Sequence[Sequence[str]]] | None = None,
    challenge: str | None = None,
    name: str | None = None,
    keysize: int = 2048,
    key_type: str = "RSA",
    key_usage: int | None = None,
    retries: int | None = None,
    retry_delay: int | None = None,
    subject_alt_name: Mapping[str, Any] | None = None,
    ca_fingerprint: bytes | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """com.apple.security.scep: the device requests an identity from a SCEP server.

    ``subject`` is Apple's X.500 form: ``[[["O", "Org"]], [["CN", "name"]]]``.
    ``keysize`` defaults to 2048 because Apple's default (1024) is too weak.
    ``extra`` holds further keys of the PayloadContent dictionary.
    """
    content = _merge(
        {
            "URL": url,
            "Name": name,
            "Subject": _plist_value(subject),
            "Challenge": challenge,
            "Keysize": keysize,
            "Key Type": key_type,
            "Key Usage": key_usage,
            "Retries": retries,
            "RetryDelay": retry_delay,
            "SubjectAltName": _plist_value(subject_alt_name),
            "CAFingerprint": ca_fingerprint,
        },
        extra,
        "SCEP",
    )
    return _build(
        "com.apple.security.scep", identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization,
        keys={"PayloadContent": content}, extra=None,
    )


def _certificate_payload(
    payload_type: str, identifier: str, display_name: str, certificate_der: bytes,
    filename: str | None, uuid: Any, description: str | None, organization: str | None,
) -> Payload:
    return _build(
        payload_type, identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization,
        keys={"PayloadContent": certificate_der, "PayloadCertificateFileName": filename}, extra=None,
    )


def root_certificate_payload(
    *,
    identifier: str,
    display_name: str,
    certificate_der: bytes,
    filename: str | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
) -> Payload:
    """com.apple.security.root: a self-signed CA certificate the device will trust."""
    return _certificate_payload(
        "com.apple.security.root", identifier, display_name, certificate_der, filename, uuid,
        description, organization,
    )


def pkcs1_certificate_payload(
    *,
    identifier: str,
    display_name: str,
    certificate_der: bytes,
    filename: str | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
) -> Payload:
    """com.apple.security.pkcs1: a DER certificate without key (e.g. an intermediate CA)."""
    return _certificate_payload(
        "com.apple.security.pkcs1", identifier, display_name, certificate_der, filename, uuid,
        description, organization,
    )


def pkcs12_payload(
    *,
    identifier: str,
    display_name: str,
    data: bytes,
    password: str,
    filename: str | None = None,
    allow_all_apps_access: bool | None = None,
    key_is_extractable: bool | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
) -> Payload:
    """com.apple.security.pkcs12: an identity (key + certificate); checked to open with ``password``."""
    keys = {
        "PayloadContent": data,
        "Password": password,
        "PayloadCertificateFileName": filename,
        "AllowAllAppsAccess": allow_all_apps_access,
        "KeyIsExtractable": key_is_extractable,
    }
    return _build(
        "com.apple.security.pkcs12", identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization, keys=keys, extra=None,
    )


def wireguard_vpn_payload(
    *,
    identifier: str,
    display_name: str,
    user_defined_name: str,
    wg_quick_config: str,
    remote_address: str | None = None,
    on_demand_enabled: bool | None = None,
    on_demand_rules: Sequence[Mapping[str, Any]] | None = None,
    vpn_sub_type: str = WIREGUARD_IOS_BUNDLE_ID,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """com.apple.vpn.managed for the WireGuard app (VPNSubType com.wireguard.ios).

    ``remote_address`` defaults to the first peer's Endpoint (the app shows it as
    the server).  ``extra`` holds further keys of the VPN dictionary.
    """
    if remote_address is None:
        remote_address = _first_endpoint(wg_quick_config)
    vpn = _merge(
        {
            "RemoteAddress": remote_address,
            "AuthenticationMethod": "Password",
            "OnDemandEnabled": _flag_value(on_demand_enabled),
            "OnDemandRules": _plist_value(on_demand_rules),
        },
        extra,
        "VPN",
    )
    keys = {
        "VPNType": "VPN",
        "VPNSubType": vpn_sub_type,
        "UserDefinedName": user_defined_name,
        "VendorConfig": {"WgQuickConfig": wg_quick_config},
        "VPN": vpn,
    }
    return _build(
        "com.apple.vpn.managed", identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization, keys=keys, extra=None,
    )


def _first_endpoint(text: str) -> str:
    if not isinstance(text, str):
        raise PayloadError(
            "VendorConfig.WgQuickConfig",
            f"VPN: VendorConfig.WgQuickConfig must be a string (got {type(text).__name__})",
        )
    problem = _check_wg_quick(text)
    if problem:
        raise PayloadError("VendorConfig.WgQuickConfig", f"VPN: VendorConfig.WgQuickConfig {problem}")
    for section in _wg_parse(text):
        if section.kind == "peer" and "endpoint" in section.attrs:
            return section.attrs["endpoint"]
    raise PayloadError(
        "VPN.RemoteAddress",
        "VPN: VPN.RemoteAddress is required when no [Peer] in WgQuickConfig has an Endpoint",
    )


def ikev2_vpn_payload(
    *,
    identifier: str,
    display_name: str,
    user_defined_name: str,
    remote_address: str,
    remote_identifier: str,
    local_identifier: str,
    certificate_uuid: str,
    server_certificate_issuer_common_name: str | None = None,
    server_certificate_common_name: str | None = None,
    certificate_type: str | None = None,
    extended_auth_enabled: bool | None = None,
    ike_sa_parameters: Mapping[str, Any] | None = None,
    child_sa_parameters: Mapping[str, Any] | None = None,
    enable_pfs: bool | None = None,
    dead_peer_detection_rate: str | None = None,
    on_demand_enabled: bool | None = None,
    on_demand_rules: Sequence[Mapping[str, Any]] | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """com.apple.vpn.managed, VPNType IKEv2, certificate (machine) authentication.

    ``certificate_uuid`` is the PayloadUUID of the identity payload (PKCS#12 or
    SCEP) in the same profile.  ``extra`` holds further keys of the IKEv2 dictionary.
    """
    ike = _merge(
        {
            "RemoteAddress": remote_address,
            "RemoteIdentifier": remote_identifier,
            "LocalIdentifier": local_identifier,
            "AuthenticationMethod": "Certificate",
            "PayloadCertificateUUID": certificate_uuid,
            "CertificateType": certificate_type,
            "ServerCertificateIssuerCommonName": server_certificate_issuer_common_name,
            "ServerCertificateCommonName": server_certificate_common_name,
            "ExtendedAuthEnabled": _flag_value(extended_auth_enabled),
            "IKESecurityAssociationParameters": _plist_value(ike_sa_parameters),
            "ChildSecurityAssociationParameters": _plist_value(child_sa_parameters),
            "EnablePFS": _flag_value(enable_pfs),
            "DeadPeerDetectionRate": dead_peer_detection_rate,
            "OnDemandEnabled": _flag_value(on_demand_enabled),
            "OnDemandRules": _plist_value(on_demand_rules),
        },
        extra,
        "VPN",
    )
    keys = {"VPNType": "IKEv2", "UserDefinedName": user_defined_name, "IKEv2": ike}
    return _build(
        "com.apple.vpn.managed", identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization, keys=keys, extra=None,
    )


def passcode_payload(
    *,
    identifier: str,
    display_name: str,
    allow_simple: bool | None = None,
    force_pin: bool | None = None,
    min_length: int | None = None,
    require_alphanumeric: bool | None = None,
    min_complex_chars: int | None = None,
    max_inactivity: int | None = None,
    max_pin_age_in_days: int | None = None,
    max_failed_attempts: int | None = None,
    pin_history: int | None = None,
    max_grace_period: int | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """com.apple.mobiledevice.passwordpolicy; unset arguments are left to the device."""
    keys = {
        "allowSimple": allow_simple,
        "forcePIN": force_pin,
        "minLength": min_length,
        "requireAlphanumeric": require_alphanumeric,
        "minComplexChars": min_complex_chars,
        "maxInactivity": max_inactivity,
        "maxPINAgeInDays": max_pin_age_in_days,
        "maxFailedAttempts": max_failed_attempts,
        "pinHistory": pin_history,
        "maxGracePeriod": max_grace_period,
    }
    return _build(
        "com.apple.mobiledevice.passwordpolicy", identifier=identifier, display_name=display_name,
        uuid=uuid, description=description, organization=organization, keys=keys, extra=extra,
    )


def restrictions_payload(
    *,
    identifier: str,
    display_name: str,
    allow_camera: bool | None = None,
    allow_screen_shot: bool | None = None,
    allow_cloud_document_sync: bool | None = None,
    allow_cloud_backup: bool | None = None,
    allow_cloud_keychain_sync: bool | None = None,
    allow_managed_apps_cloud_sync: bool | None = None,
    allow_untrusted_tls_prompt: bool | None = None,
    allow_open_from_managed_to_unmanaged: bool | None = None,
    allow_open_from_unmanaged_to_managed: bool | None = None,
    force_encrypted_backup: bool | None = None,
    allow_air_drop: bool | None = None,
    force_air_drop_unmanaged: bool | None = None,
    allow_erase_content_and_settings: bool | None = None,
    allow_account_modification: bool | None = None,
    allow_ui_configuration_profile_installation: bool | None = None,
    allow_enterprise_app_trust: bool | None = None,
    allow_vpn_creation: bool | None = None,
    allow_usb_restricted_mode: bool | None = None,
    require_managed_pasteboard: bool | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """com.apple.applicationaccess; ``extra`` may carry any other key Apple lists."""
    keys = {
        "allowCamera": allow_camera,
        "allowScreenShot": allow_screen_shot,
        "allowCloudDocumentSync": allow_cloud_document_sync,
        "allowCloudBackup": allow_cloud_backup,
        "allowCloudKeychainSync": allow_cloud_keychain_sync,
        "allowManagedAppsCloudSync": allow_managed_apps_cloud_sync,
        "allowUntrustedTLSPrompt": allow_untrusted_tls_prompt,
        "allowOpenFromManagedToUnmanaged": allow_open_from_managed_to_unmanaged,
        "allowOpenFromUnmanagedToManaged": allow_open_from_unmanaged_to_managed,
        "forceEncryptedBackup": force_encrypted_backup,
        "allowAirDrop": allow_air_drop,
        "forceAirDropUnmanaged": force_air_drop_unmanaged,
        "allowEraseContentAndSettings": allow_erase_content_and_settings,
        "allowAccountModification": allow_account_modification,
        "allowUIConfigurationProfileInstallation": allow_ui_configuration_profile_installation,
        "allowEnterpriseAppTrust": allow_enterprise_app_trust,
        "allowVPNCreation": allow_vpn_creation,
        "allowUSBRestrictedMode": allow_usb_restricted_mode,
        "requireManagedPasteboard": require_managed_pasteboard,
    }
    return _build(
        "com.apple.applicationaccess", identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization, keys=keys, extra=extra,
    )


def wifi_payload(
    *,
    identifier: str,
    display_name: str,
    ssid: str,
    encryption_type: str = "WPA2",
    password: str | None = None,
    hidden_network: bool | None = None,
    auto_join: bool | None = None,
    eap_client_configuration: Mapping[str, Any] | None = None,
    certificate_uuid: str | None = None,
    uuid: str | uuidlib.UUID | None = None,
    description: str | None = None,
    organization: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Payload:
    """com.apple.wifi.managed.  ``encryption_type`` defaults to WPA2 (joins WPA2/WPA3)."""
    keys = {
        "SSID_STR": ssid,
        "EncryptionType": encryption_type,
        "Password": password,
        "HIDDEN_NETWORK": hidden_network,
        "AutoJoin": auto_join,
        "EAPClientConfiguration": _plist_value(eap_client_configuration),
        "PayloadCertificateUUID": certificate_uuid,
    }
    return _build(
        "com.apple.wifi.managed", identifier=identifier, display_name=display_name, uuid=uuid,
        description=description, organization=organization, keys=keys, extra=extra,
    )


# --------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------

_TOP_LEVEL_KEYS: tuple[Key, ...] = (
    _s("PayloadType", required=True, allowed=("Configuration",)),
    _i("PayloadVersion", required=True, allowed=(1,)),
    _s("PayloadIdentifier", required=True, pattern=_REVERSE_DNS),
    _s("PayloadUUID", required=True, pattern=_UPPER_UUID),
    _s("PayloadDisplayName", required=True),
    _s("PayloadOrganization"),
    _s("PayloadDescription"),
    _b("PayloadRemovalDisallowed"),
    _s("PayloadScope", allowed=("System", "User")),
    Key("ConsentText", "dictionary", values=_s("text")),
    Key("PayloadContent", "array", required=True, item=Key("payload", "dictionary", open=True)),
    _b("HasRemovalPasscode"),
    Key("RemovalDate", "date"),
    Key("DurationUntilRemoval", "real", min=0),
    Key("PayloadExpirationDate", "date"),
    _i("TargetDeviceType", allowed=(0, 1, 2, 3, 4, 5, 6)),
)

# Keys (at any depth) that point at another payload of the same profile.
_IDENTITY_REFERENCES = ("IdentityCertificateUUID", "PayloadCertificateUUID")
_CERTIFICATE_REFERENCES = (
    "PayloadCertificateAnchorUUID",
    "ServerURLPinningCertificateUUIDs",
    "CheckInURLPinningCertificateUUIDs",
)


def _references(value: Any, path: str) -> Iterator[tuple[str, str, str]]:
    """Yield (path, key, uuid) for every cross-payload certificate reference."""
    if isinstance(value, dict):
        for name, element in value.items():
            sub = _join(path, name)
            if name in _IDENTITY_REFERENCES and isinstance(element, str):
                yield sub, name, element
            elif name in _CERTIFICATE_REFERENCES and isinstance(element, list):
                for index, item in enumerate(element):
                    if isinstance(item, str):
                        yield f"{sub}[{index}]", name, item
            else:
                yield from _references(element, sub)
    elif isinstance(value, list):
        for index, element in enumerate(value):
            yield from _references(element, f"{path}[{index}]")


@dataclass
class Profile:
    """A top-level configuration profile (PayloadType 'Configuration')."""

    identifier: str
    display_name: str
    organization: str
    description: str | None = None
    payloads: list[Payload | Mapping[str, Any]] = field(default_factory=list)
    uuid: str = field(default_factory=lambda: _uuid_text(None))
    removal_disallowed: bool = False
    scope: str = "System"
    consent_text: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        self.uuid = _uuid_text(self.uuid)
        self.payloads = list(self.payloads)

    def add(self, payload: Payload | Mapping[str, Any]) -> Profile:
        """Append a payload (a Payload or a dict to validate); returns self."""
        self.payloads.append(payload)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The validated profile dictionary, ready for :mod:`plistlib`."""
        label = "Profile"
        # Dicts are validated here; Payload objects are re-validated because
        # nothing stops a caller from having built one around a shared dict.
        payloads = [
            validate_payload_dict(p.to_dict() if isinstance(p, Payload) else p) for p in self.payloads
        ]
        d: dict[str, Any] = {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": self.identifier,
            "PayloadUUID": self.uuid,
            "PayloadDisplayName": self.display_name,
            "PayloadOrganization": self.organization,
            "PayloadRemovalDisallowed": self.removal_disallowed,
            "PayloadScope": self.scope,
            "PayloadContent": [p.to_dict() for p in payloads],
        }
        if self.description is not None:
            d["PayloadDescription"] = self.description
        if self.consent_text is not None:
            d["ConsentText"] = dict(self.consent_text)
        _check_dict(label, _TOP_LEVEL_KEYS, d, "", owner="the profile")
        self._check_payload_set(label, payloads)
        return d

    def validate(self) -> None:
        """Raise PayloadError if the profile or any payload is invalid."""
        self.to_dict()

    def to_plist_bytes(self) -> bytes:
        """The profile as an XML property list (unsigned)."""
        return plistlib.dumps(self.to_dict(), fmt=plistlib.FMT_XML)

    def _check_payload_set(self, label: str, payloads: list[Payload]) -> None:
        identifiers = {self.identifier: "the profile"}
        uuids = {self.uuid.upper(): "the profile"}
        counts: dict[str, int] = {}
        for index, p in enumerate(payloads):
            where = f"PayloadContent[{index}]"
            # Apple: identifiers must be unique within the profile; the device
            # matches payloads by identifier + UUID when replacing a profile.
            if p.identifier in identifiers:
                _fail(label, f"{where}.PayloadIdentifier",
                      f"{p.identifier!r} is already used by {identifiers[p.identifier]}")
            identifiers[p.identifier] = where
            if p.uuid.upper() in uuids:
                _fail(label, f"{where}.PayloadUUID", f"{p.uuid} is already used by {uuids[p.uuid.upper()]}")
            uuids[p.uuid.upper()] = where
            counts[p.payload_type] = counts.get(p.payload_type, 0) + 1
            if not _SPECS[p.payload_type].multiple and counts[p.payload_type] > 1:
                _fail(label, f"{where}.PayloadType", f"{p.payload_type} may appear only once in a profile")
        by_uuid = {p.uuid.upper(): p.payload_type for p in payloads}
        for index, p in enumerate(payloads):
            for path, name, ref in _references(p.to_dict(), f"PayloadContent[{index}]"):
                target = by_uuid.get(ref.upper())
                wanted = _IDENTITY_TYPES if name in _IDENTITY_REFERENCES else _CERTIFICATE_TYPES
                if target not in wanted:
                    found = "no payload" if target is None else f"a {target} payload"
                    _fail(label, path,
                          f"must name a certificate payload in this profile ({', '.join(wanted)}); "
                          f"{ref} is {found}")
