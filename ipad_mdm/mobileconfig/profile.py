"""The top-level configuration profile."""

from __future__ import annotations

import plistlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping


from .builders import _uuid_text
from .payload import Payload, _CERTIFICATE_TYPES, _IDENTITY_TYPES, _SPECS, validate_payload_dict
from .spec import Key, _REVERSE_DNS, _UPPER_UUID, _b, _check_dict, _fail, _i, _join, _s


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
        # Dicts are validated here. A Payload was validated when it was made, on its own deep copy,
        # and hands out only copies: validating it again (two more deep copies) changed nothing.
        payloads = [p if isinstance(p, Payload) else validate_payload_dict(p) for p in self.payloads]
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
