"""The declaration types this server emits, and the keys it relies on for each (our statement of
Apple's schemas, declarative/declarations/*.yaml; a test checks it against the YAML).

A payload given by an operator is validated here: unknown keys, wrong types, values outside a
rangelist or range are refused with the key named. Keys Apple marks "iOS: n/a" are left out,
since the office's devices are iPads. Pure: no Flask, no database.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PREFIX = "com.apple."
RESERVED_PREFIX = "vn.gov.ipadmdm."   # identifiers of the declarations the server builds itself
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
LOCAL_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
VERSION_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){1,2}$")


class DeclarationError(ValueError):
    """Invalid declaration input; `key` names the offending field (HTTP 400)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class F:
    type: type | tuple
    required: bool = False
    enum: tuple = ()
    min: int | None = None
    max: int | None = None
    sub: dict | None = None          # keys of a dictionary
    items: "F | None" = None         # element of an array
    pattern: re.Pattern | None = None
    any_keys: bool = False           # a dictionary with free keys (management.properties)


_STR, _BOOL, _INT, _DICT, _LIST = str, bool, int, dict, list
_REF = {"DataURL": F(_STR, True), "ContentType": F(_STR), "Size": F(_INT, min=0), "Hash-SHA-256": F(_STR)}
_AUTH = {"Type": F(_STR, True, enum=("MDM", "None"))}
_AUTOMATIC = ("Allowed", "AlwaysOn", "AlwaysOff")


@dataclass(frozen=True)
class DeclarationType:
    type: str                        # full Type, e.g. com.apple.configuration.passcode.settings
    kind: str                        # activation | asset | configuration | management
    keys: dict
    ios: str = "15.0"                # first iPadOS that supports it
    # Payload parts the server renders itself (asset data URLs, the legacy profile URL): the
    # operator gives a `source` instead (see declarative.service).
    rendered: tuple = ()
    sources: tuple = ()
    asset_reference: tuple = field(default=())   # asset types a CredentialAssetReference may name

    @property
    def short(self) -> str:
        return self.type[len(PREFIX):]


TYPES: dict[str, DeclarationType] = {t.type: t for t in (
    DeclarationType("com.apple.activation.simple", "activation", {
        "StandardConfigurations": F(_LIST, True, items=F(_STR, pattern=IDENTIFIER_RE)),
        "Predicate": F(_STR, max=4000)}),
    DeclarationType("com.apple.configuration.passcode.settings", "configuration", {
        "RequirePasscode": F(_BOOL), "RequireAlphanumericPasscode": F(_BOOL), "RequireComplexPasscode": F(_BOOL),
        "MinimumLength": F(_INT, min=0, max=16), "MinimumComplexCharacters": F(_INT, min=0, max=4),
        "MaximumFailedAttempts": F(_INT, min=2, max=11), "MaximumGracePeriodInMinutes": F(_INT, min=0),
        "MaximumInactivityInMinutes": F(_INT, min=0, max=15), "MaximumPasscodeAgeInDays": F(_INT, min=0, max=730),
        "PasscodeReuseLimit": F(_INT, min=1, max=50)}),
    DeclarationType("com.apple.configuration.softwareupdate.enforcement.specific", "configuration", {
        "TargetOSVersion": F(_STR, True, pattern=VERSION_RE), "TargetBuildVersion": F(_STR, max=32),
        "TargetLocalDateTime": F(_STR, True, pattern=LOCAL_DATETIME_RE), "DetailsURL": F(_STR, max=2000)},
        ios="17.0"),
    DeclarationType("com.apple.configuration.softwareupdate.settings", "configuration", {
        "Notifications": F(_BOOL),
        "Deferrals": F(_DICT, sub={"CombinedPeriodInDays": F(_INT, min=1, max=90)}),
        "RecommendedCadence": F(_STR, enum=("All", "Oldest", "Newest")),
        "AutomaticActions": F(_DICT, sub={"Download": F(_STR, enum=_AUTOMATIC),
                                          "InstallOSUpdates": F(_STR, enum=_AUTOMATIC)}),
        "RapidSecurityResponse": F(_DICT, sub={"Enable": F(_BOOL), "EnableRollback": F(_BOOL)})},
        ios="18.0"),
    DeclarationType("com.apple.configuration.management.status-subscriptions", "configuration", {
        "StatusItems": F(_LIST, True, items=F(_DICT, sub={"Name": F(_STR, True)}))}),
    DeclarationType("com.apple.configuration.security.certificate", "configuration", {
        "CredentialAssetReference": F(_STR, True, pattern=IDENTIFIER_RE)},
        asset_reference=("com.apple.asset.credential.certificate",)),
    DeclarationType("com.apple.configuration.security.identity", "configuration", {
        "CredentialAssetReference": F(_STR, True, pattern=IDENTIFIER_RE)},
        asset_reference=("com.apple.asset.credential.identity", "com.apple.asset.credential.scep")),
    DeclarationType("com.apple.configuration.legacy", "configuration", {"ProfileURL": F(_STR, True)},
                    rendered=("ProfileURL",), sources=("profile",)),
    DeclarationType("com.apple.configuration.app.managed", "configuration", {
        "AppStoreID": F(_STR, max=32), "BundleID": F(_STR, max=255), "ManifestURL": F(_STR, max=2000),
        "InstallBehavior": F(_DICT, sub={"Install": F(_STR, enum=("Optional", "Required")),
                                         "License": F(_DICT, sub={"Assignment": F(_STR, enum=("Device", "User")),
                                                                  "VPPType": F(_STR, enum=("Device", "User"))})}),
        "IncludeInBackup": F(_BOOL),
        "Attributes": F(_DICT, sub={"AssociatedDomains": F(_LIST, items=F(_STR)),
                                    "AssociatedDomainsEnableDirectDownloads": F(_BOOL), "VPNUUID": F(_STR)})},
        ios="17.2"),
    DeclarationType("com.apple.management.organization-info", "management", {
        "Name": F(_STR, True, max=255), "Email": F(_STR, max=255), "URL": F(_STR, max=2000)}),
    DeclarationType("com.apple.management.properties", "management", {}, ),
    DeclarationType("com.apple.management.server-capabilities", "management", {
        "Version": F(_STR, True), "SupportedFeatures": F(_DICT, True, any_keys=True)}),
    DeclarationType("com.apple.asset.credential.certificate", "asset", {
        "Reference": F(_DICT, True, sub=_REF), "Authentication": F(_DICT, sub=_AUTH)},
        ios="17.0", rendered=("Reference", "Authentication"), sources=("certificate", "instance_ca")),
    DeclarationType("com.apple.asset.credential.identity", "asset", {
        "Reference": F(_DICT, True, sub=_REF), "Authentication": F(_DICT, sub=_AUTH),
        "Accessible": F(_STR, enum=("Default", "AfterFirstUnlock"))},
        ios="17.0", rendered=("Reference", "Authentication"), sources=("device_identity",)),
    DeclarationType("com.apple.asset.data", "asset", {
        "Reference": F(_DICT, True, sub=_REF), "Authentication": F(_DICT, sub=_AUTH)},
        ios="17.0", rendered=("Reference", "Authentication"), sources=("data",)),
)}
KINDS = ("activation", "asset", "configuration", "management")
# Types an operator creates (the server-capabilities declaration is the server's own).
OPERATOR_TYPES = tuple(t for t in TYPES if t != "com.apple.management.server-capabilities")


def type_of(value) -> DeclarationType:
    """'passcode.settings', 'configuration.passcode.settings' or the full Type."""
    if isinstance(value, str):
        for candidate in (value, PREFIX + value, PREFIX + "configuration." + value):
            if candidate in TYPES:
                return TYPES[candidate]
    raise DeclarationError("type", f"unknown declaration type {str(value)[:80]!r}; supported: "
                           + ", ".join(TYPES[t].short for t in OPERATOR_TYPES))


def _check(path: str, spec: F, value) -> None:
    kinds = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        raise DeclarationError(path, f"{path} must be {'/'.join(_TYPE_NAMES[k] for k in kinds)}")
    if spec.enum and value not in spec.enum:
        raise DeclarationError(path, f"{path} must be one of {', '.join(spec.enum)}")
    if isinstance(value, int) and not isinstance(value, bool):
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            raise DeclarationError(path, f"{path} must be between {spec.min} and {spec.max}")
    if isinstance(value, str):
        if spec.max is not None and len(value) > spec.max:
            raise DeclarationError(path, f"{path} is longer than {spec.max} characters")
        if spec.pattern is not None and not spec.pattern.match(value):
            raise DeclarationError(path, f"{path} has an invalid format")
    if isinstance(value, dict) and not spec.any_keys:
        check_keys(path, spec.sub or {}, value)
    if isinstance(value, list):
        if len(value) > 500:
            raise DeclarationError(path, f"{path} has more than 500 entries")
        for i, item in enumerate(value):
            _check(f"{path}[{i}]", spec.items or F((str, int, float, bool, dict, list)), item)


_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", float: "a number", dict: "an object",
               list: "an array"}


def check_keys(path: str, keys: dict, value: dict) -> None:
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise DeclarationError(f"{path}.{unknown[0]}" if path else unknown[0],
                               f"{path or 'Payload'}: unknown key(s) {', '.join(unknown)}; allowed: "
                               + (", ".join(sorted(keys)) or "none"))
    for key, spec in keys.items():
        where = f"{path}.{key}" if path else key
        if key not in value:
            if spec.required:
                raise DeclarationError(where, f"{where} is required")
            continue
        _check(where, spec, value[key])


def validate_payload(dtype: DeclarationType, payload, *, rendered: bool = False) -> dict:
    """An operator's payload (without the keys the server renders), or a rendered one."""
    if not isinstance(payload, dict):
        raise DeclarationError("payload", "payload must be a JSON object")
    if dtype.type == "com.apple.management.properties":
        _check_properties(payload)
        return payload
    keys = dtype.keys if rendered else {k: v for k, v in dtype.keys.items() if k not in dtype.rendered}
    check_keys("", keys, payload)
    if dtype.type == "com.apple.configuration.softwareupdate.enforcement.specific":
        _check_local_datetime(payload["TargetLocalDateTime"])
    return payload


def _check_local_datetime(value: str) -> None:
    import datetime as dt

    try:
        dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise DeclarationError("TargetLocalDateTime", "TargetLocalDateTime is not a real date and time "
                               "(yyyy-mm-ddThh:mm:ss, the device's local time)") from None


def _check_properties(payload: dict, depth: int = 0) -> None:
    if depth > 8:
        raise DeclarationError("payload", "properties are nested deeper than 8 levels")
    for key, value in payload.items():
        if not isinstance(key, str) or not key or len(key) > 128:
            raise DeclarationError("payload", "property names must be strings of 1-128 characters")
        if isinstance(value, dict):
            _check_properties(value, depth + 1)
        elif not isinstance(value, (str, int, float, bool, list)) or value is None:
            raise DeclarationError(key, f"{key} must be a string, number, boolean, array or object")
