"""One typed builder per payload type."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, Mapping, Sequence


from .mdm_scep import ACCESS_RIGHTS_ALL
from .payload import Payload, _SPECS
from .spec import PayloadError, _COMMON_KEYS
from .wgquick import WIREGUARD_IOS_BUNDLE_ID, _check_wg_quick, _wg_parse


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


