"""Configuration profiles (.mobileconfig): typed payload builders with data-driven validation, and signing.

Below both mdm (the enrollment profile) and the feature packages (profiles, vpn): pure code, no
storage, no Flask.

Key names, types, allowed values (``rangelist`` / ``range``) and ``format``
patterns follow Apple's device-management reference (``mdm/profiles/*.yaml``
in apple/device-management).  The reference is deliberately *not* read at
runtime: the parts this office relies on are restated below as small spec
tables, so a change upstream becomes a reviewed code change here.

Rules that go beyond the reference (uppercase UUIDs, reverse-DNS identifiers,
the WireGuard app's own expectations, certificate parsing, ...) are marked
"local rule" with the reason next to them.

Public surface: :class:`PayloadError`, :class:`Payload`, :class:`Profile`,
:func:`validate_payload_dict`, one ``*_payload(...)`` builder per type, and
:func:`sign_profile` / :func:`verify_profile`.

Modules: ``spec`` (the engine: keys, checks, shared formats), one module per payload family
(``mdm_scep``, ``certificates``, ``vpn`` with ``wgquick``, ``device_policy``, ``wifi``),
``payload`` (the registry and validation), ``builders``, ``profile``, ``signing``.
"""

from __future__ import annotations

from .builders import (
    ikev2_vpn_payload,
    mdm_payload,
    passcode_payload,
    pkcs1_certificate_payload,
    pkcs12_payload,
    restrictions_payload,
    root_certificate_payload,
    scep_payload,
    wifi_payload,
    wireguard_vpn_payload,
)
from .mdm_scep import ACCESS_RIGHTS_ALL
from .payload import Payload, validate_payload_dict
from .profile import Profile
from .signing import sign_profile, verify_profile
from .spec import PayloadError
from .wgquick import WIREGUARD_IOS_BUNDLE_ID

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
    "sign_profile",
    "verify_profile",
]
