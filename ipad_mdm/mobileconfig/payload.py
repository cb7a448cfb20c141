"""The registry of payload types and the validation entry point."""

from __future__ import annotations

import copy
from typing import Any, Mapping


from .certificates import _PKCS1, _PKCS12, _ROOT
from .device_policy import _PASSCODE, _RESTRICTIONS
from .mdm_scep import _MDM, _SCEP
from .spec import PayloadError, _COMMON_KEYS, _PayloadSpec, _check_dict
from .vpn import _VPN, _VPN_APPLAYER
from .wifi import _WIFI


_SPECS: dict[str, _PayloadSpec] = {
    spec.payload_type: spec
    for spec in (_MDM, _SCEP, _ROOT, _PKCS1, _PKCS12, _VPN, _VPN_APPLAYER, _PASSCODE, _RESTRICTIONS, _WIFI)
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


