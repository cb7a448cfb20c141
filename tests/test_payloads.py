"""Tests for ipad_mdm.mobileconfig: builders, data-driven validation, Profile.

The expected keys and values are written out here on purpose (they restate
Apple's reference); the tests never read the reference YAML.
"""

from __future__ import annotations

import base64
import datetime as dt
import plistlib
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from ipad_mdm.mobileconfig import (
    ACCESS_RIGHTS_ALL,
    Payload,
    PayloadError,
    Profile,
    ikev2_vpn_payload,
    mdm_payload,
    passcode_payload,
    pkcs1_certificate_payload,
    pkcs12_payload,
    restrictions_payload,
    root_certificate_payload,
    scep_payload,
    validate_payload_dict,
    wifi_payload,
    wireguard_vpn_payload,
)

ORG = "gov.example"
UUID_RE = r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$"


# --------------------------------------------------------------------------
# Fixtures: real certificates, a real PKCS#12, real WireGuard keys
# --------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer: str, key, signer, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def pki():
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Test Root CA", "Test Root CA", root_key, root_key, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("Test Issuing CA", "Test Root CA", inter_key, root_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("ipad-01", "Test Issuing CA", leaf_key, inter_key, ca=False)
    p12 = pkcs12.serialize_key_and_certificates(
        b"ipad-01", leaf_key, leaf, [inter], serialization.BestAvailableEncryption(b"s3cret")
    )
    der = serialization.Encoding.DER
    return {
        "root": root.public_bytes(der),
        "root_pem": root.public_bytes(serialization.Encoding.PEM),
        "inter": inter.public_bytes(der),
        "leaf": leaf.public_bytes(der),
        "p12": p12,
    }


def _wg_key() -> str:
    raw = x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


PRIVATE_KEY = _wg_key()
PEER_KEY = _wg_key()
WG_CONF = f"""[Interface]
PrivateKey = {PRIVATE_KEY}
Address = 10.20.0.2/32, fd00:20::2/128
DNS = 10.20.0.1, office.example.gov.vn

[Peer]
PublicKey = {PEER_KEY}
AllowedIPs = 10.0.0.0/8
AllowedIPs = 192.168.10.0/24
Endpoint = vpn.example.gov.vn:51820
PersistentKeepalive = 25
"""


# --------------------------------------------------------------------------
# Builders used across tests
# --------------------------------------------------------------------------


def make_root(pki, **kw) -> Payload:
    args = dict(identifier=f"{ORG}.ca.root", display_name="Root CA", certificate_der=pki["root"])
    args.update(kw)
    return root_certificate_payload(**args)


def make_inter(pki, **kw) -> Payload:
    args = dict(identifier=f"{ORG}.ca.issuing", display_name="Issuing CA", certificate_der=pki["inter"])
    args.update(kw)
    return pkcs1_certificate_payload(**args)


def make_pkcs12(pki, **kw) -> Payload:
    args = dict(identifier=f"{ORG}.identity.vpn", display_name="VPN identity", data=pki["p12"], password="s3cret")
    args.update(kw)
    return pkcs12_payload(**args)


def make_scep(**kw) -> Payload:
    args = dict(
        identifier=f"{ORG}.identity.scep",
        display_name="Device identity",
        url="https://mdm.example.gov.vn/scep",
        name="ipad-mdm",
        subject=[[["O", "Office"]], [["CN", "ipad-mdm-identity-1"]]],
        challenge="one-time-challenge",
        keysize=2048,
        key_usage=5,
        retries=3,
        retry_delay=10,
    )
    args.update(kw)
    return scep_payload(**args)


def make_mdm(identity_uuid: str, **kw) -> Payload:
    args = dict(
        identifier=f"{ORG}.mdm",
        display_name="Device management",
        server_url="https://mdm.example.gov.vn/mdm/server",
        check_in_url="https://mdm.example.gov.vn/mdm/checkin",
        topic="com.apple.mgmt.External.0d2b3c4e-1111-2222-3333-444455556666",
        identity_certificate_uuid=identity_uuid,
        sign_message=True,
        access_rights=ACCESS_RIGHTS_ALL,
        check_out_when_removed=True,
        server_capabilities=["com.apple.mdm.per-user-connections"],
    )
    args.update(kw)
    return mdm_payload(**args)


def make_wireguard(**kw) -> Payload:
    args = dict(
        identifier=f"{ORG}.vpn.wireguard",
        display_name="VPN",
        user_defined_name="Office WireGuard",
        wg_quick_config=WG_CONF,
        on_demand_enabled=True,
        on_demand_rules=[{"Action": "Connect"}],
    )
    args.update(kw)
    return wireguard_vpn_payload(**args)


def make_ikev2(identity_uuid: str, **kw) -> Payload:
    args = dict(
        identifier=f"{ORG}.vpn.ikev2",
        display_name="IKEv2 VPN",
        user_defined_name="Office IKEv2",
        remote_address="ike.example.gov.vn",
        remote_identifier="ike.example.gov.vn",
        local_identifier="ipad-01",
        certificate_uuid=identity_uuid,
        server_certificate_issuer_common_name="Test Issuing CA",
        certificate_type="ECDSA256",
        extended_auth_enabled=False,
        ike_sa_parameters={
            "EncryptionAlgorithm": "AES-256-GCM",
            "IntegrityAlgorithm": "SHA2-384",
            "DiffieHellmanGroup": 20,
            "LifeTimeInMinutes": 1440,
        },
        child_sa_parameters={
            "EncryptionAlgorithm": "AES-256-GCM",
            "IntegrityAlgorithm": "SHA2-384",
            "DiffieHellmanGroup": 20,
            "LifeTimeInMinutes": 60,
        },
        enable_pfs=True,
    )
    args.update(kw)
    return ikev2_vpn_payload(**args)


def make_passcode(**kw) -> Payload:
    args = dict(
        identifier=f"{ORG}.passcode",
        display_name="Passcode",
        allow_simple=False,
        force_pin=True,
        min_length=8,
        require_alphanumeric=True,
        max_inactivity=5,
        max_pin_age_in_days=90,
        max_failed_attempts=10,
        pin_history=5,
        max_grace_period=0,
    )
    args.update(kw)
    return passcode_payload(**args)


def make_restrictions(**kw) -> Payload:
    args = dict(
        identifier=f"{ORG}.restrictions",
        display_name="Restrictions",
        allow_camera=False,
        allow_screen_shot=False,
        allow_cloud_document_sync=False,
        allow_cloud_backup=False,
        allow_untrusted_tls_prompt=False,
        allow_open_from_managed_to_unmanaged=False,
        allow_open_from_unmanaged_to_managed=True,
        force_encrypted_backup=True,
        allow_air_drop=False,
        allow_erase_content_and_settings=False,
        allow_account_modification=False,
        extra={"allowCloudPhotoLibrary": False, "ratingApps": 1000, "safariAcceptCookies": 1.5},
    )
    args.update(kw)
    return restrictions_payload(**args)


def make_wifi(**kw) -> Payload:
    args = dict(
        identifier=f"{ORG}.wifi.office",
        display_name="Office Wi-Fi",
        ssid="OFFICE-SECURE",
        encryption_type="WPA2",
        password="correct horse battery",
        hidden_network=True,
        auto_join=True,
    )
    args.update(kw)
    return wifi_payload(**args)


def refused(build, *key_fragments: str) -> PayloadError:
    """Assert ``build()`` raises PayloadError whose message names every fragment."""
    with pytest.raises(PayloadError) as info:
        build()
    err = info.value
    assert isinstance(err, ValueError)
    for fragment in key_fragments:
        assert fragment in str(err), f"{fragment!r} not in {str(err)!r}"
    return err


# --------------------------------------------------------------------------
# Building each payload type
# --------------------------------------------------------------------------


def test_common_keys_and_payload_object(pki):
    p = make_passcode(description="Passcode policy", organization="Office")
    d = p.to_dict()
    assert d["PayloadType"] == p.payload_type == "com.apple.mobiledevice.passwordpolicy"
    assert d["PayloadIdentifier"] == p.identifier == f"{ORG}.passcode"
    assert d["PayloadUUID"] == p.uuid
    assert p.uuid == p.uuid.upper()
    assert re.match(UUID_RE, p.uuid)
    assert d["PayloadVersion"] == 1
    assert d["PayloadDisplayName"] == "Passcode"
    assert d["PayloadDescription"] == "Passcode policy"
    assert d["PayloadOrganization"] == "Office"
    # to_dict is a copy: editing it cannot change the validated payload.
    d["minLength"] = 99
    assert p.to_dict()["minLength"] == 8


def test_given_uuid_is_normalised_to_uppercase():
    p = make_passcode(uuid="0f8fad5b-d9cb-469f-a165-70867728950e")
    assert p.uuid == "0F8FAD5B-D9CB-469F-A165-70867728950E"


def test_mdm_payload_keys():
    d = make_mdm("6F1A2B3C-4D5E-4F60-8172-93A4B5C6D7E8").to_dict()
    assert d["PayloadType"] == "com.apple.mdm"
    assert d["ServerURL"] == "https://mdm.example.gov.vn/mdm/server"
    assert d["CheckInURL"] == "https://mdm.example.gov.vn/mdm/checkin"
    assert d["Topic"].startswith("com.apple.mgmt.")
    assert d["IdentityCertificateUUID"] == "6F1A2B3C-4D5E-4F60-8172-93A4B5C6D7E8"
    assert d["SignMessage"] is True
    assert d["AccessRights"] == 8191
    assert d["CheckOutWhenRemoved"] is True
    assert d["ServerCapabilities"] == ["com.apple.mdm.per-user-connections"]


def test_scep_payload_keys():
    d = make_scep().to_dict()
    assert d["PayloadType"] == "com.apple.security.scep"
    content = d["PayloadContent"]
    assert content == {
        "URL": "https://mdm.example.gov.vn/scep",
        "Name": "ipad-mdm",
        "Subject": [[["O", "Office"]], [["CN", "ipad-mdm-identity-1"]]],
        "Challenge": "one-time-challenge",
        "Keysize": 2048,
        "Key Type": "RSA",
        "Key Usage": 5,
        "Retries": 3,
        "RetryDelay": 10,
    }


def test_scep_accepts_dotted_oid_and_multi_valued_rdn():
    p = make_scep(subject=[[["C", "VN"]], [["O", "Office"], ["2.5.4.11", "IT"]]])
    assert p.to_dict()["PayloadContent"]["Subject"][1][1] == ["2.5.4.11", "IT"]


def test_certificate_payloads_keys(pki):
    root = make_root(pki, filename="root.cer").to_dict()
    assert root["PayloadType"] == "com.apple.security.root"
    assert root["PayloadContent"] == pki["root"]
    assert root["PayloadCertificateFileName"] == "root.cer"
    inter = make_inter(pki).to_dict()
    assert inter["PayloadType"] == "com.apple.security.pkcs1"
    assert inter["PayloadContent"] == pki["inter"]


def test_pkcs12_payload_keys(pki):
    d = make_pkcs12(pki).to_dict()
    assert d["PayloadType"] == "com.apple.security.pkcs12"
    assert d["PayloadContent"] == pki["p12"]
    assert d["Password"] == "s3cret"


def test_wireguard_payload_matches_wireguard_app_layout():
    d = make_wireguard().to_dict()
    assert d["PayloadType"] == "com.apple.vpn.managed"
    assert d["VPNType"] == "VPN"
    assert d["VPNSubType"] == "com.wireguard.ios"
    assert d["UserDefinedName"] == "Office WireGuard"
    assert d["VendorConfig"] == {"WgQuickConfig": WG_CONF}
    # RemoteAddress defaults to the first peer's Endpoint.
    assert d["VPN"]["RemoteAddress"] == "vpn.example.gov.vn:51820"
    assert d["VPN"]["AuthenticationMethod"] == "Password"
    # Apple types OnDemandEnabled as integer 0/1, not boolean.
    assert d["VPN"]["OnDemandEnabled"] == 1 and type(d["VPN"]["OnDemandEnabled"]) is int
    assert d["VPN"]["OnDemandRules"] == [{"Action": "Connect"}]


def test_wireguard_explicit_remote_address_and_no_on_demand():
    d = make_wireguard(remote_address="Office VPN", on_demand_enabled=None, on_demand_rules=None).to_dict()
    assert d["VPN"] == {"RemoteAddress": "Office VPN", "AuthenticationMethod": "Password"}


def test_ikev2_payload_keys():
    uuid = "6F1A2B3C-4D5E-4F60-8172-93A4B5C6D7E8"
    d = make_ikev2(uuid).to_dict()
    assert d["VPNType"] == "IKEv2"
    assert "VPNSubType" not in d
    ike = d["IKEv2"]
    assert ike["RemoteAddress"] == "ike.example.gov.vn"
    assert ike["RemoteIdentifier"] == "ike.example.gov.vn"
    assert ike["LocalIdentifier"] == "ipad-01"
    assert ike["AuthenticationMethod"] == "Certificate"
    assert ike["PayloadCertificateUUID"] == uuid
    assert ike["ServerCertificateIssuerCommonName"] == "Test Issuing CA"
    assert ike["CertificateType"] == "ECDSA256"
    assert ike["ExtendedAuthEnabled"] == 0
    assert ike["EnablePFS"] == 1
    assert ike["IKESecurityAssociationParameters"]["EncryptionAlgorithm"] == "AES-256-GCM"
    assert ike["IKESecurityAssociationParameters"]["DiffieHellmanGroup"] == 20
    assert ike["ChildSecurityAssociationParameters"]["LifeTimeInMinutes"] == 60


def test_passcode_payload_keys():
    d = make_passcode().to_dict()
    expected = {
        "allowSimple": False,
        "forcePIN": True,
        "minLength": 8,
        "requireAlphanumeric": True,
        "maxInactivity": 5,
        "maxPINAgeInDays": 90,
        "maxFailedAttempts": 10,
        "pinHistory": 5,
        "maxGracePeriod": 0,
    }
    assert {k: d[k] for k in expected} == expected


def test_passcode_unset_arguments_are_omitted():
    d = passcode_payload(identifier=f"{ORG}.pc", display_name="PC", force_pin=True).to_dict()
    assert "minLength" not in d and d["forcePIN"] is True


def test_restrictions_payload_keys():
    d = make_restrictions().to_dict()
    assert d["PayloadType"] == "com.apple.applicationaccess"
    for key in (
        "allowCamera",
        "allowScreenShot",
        "allowCloudDocumentSync",
        "allowCloudBackup",
        "allowUntrustedTLSPrompt",
        "allowOpenFromManagedToUnmanaged",
        "allowAirDrop",
        "allowEraseContentAndSettings",
        "allowAccountModification",
        "allowCloudPhotoLibrary",
    ):
        assert d[key] is False, key
    assert d["allowOpenFromUnmanagedToManaged"] is True
    assert d["forceEncryptedBackup"] is True
    assert d["ratingApps"] == 1000
    assert d["safariAcceptCookies"] == 1.5


def test_wifi_payload_keys():
    d = make_wifi().to_dict()
    assert d["PayloadType"] == "com.apple.wifi.managed"
    assert d["SSID_STR"] == "OFFICE-SECURE"
    assert d["EncryptionType"] == "WPA2"
    assert d["Password"] == "correct horse battery"
    assert d["HIDDEN_NETWORK"] is True
    assert d["AutoJoin"] is True


def test_wifi_eap_tls_payload_keys():
    uuid = "6F1A2B3C-4D5E-4F60-8172-93A4B5C6D7E8"
    d = make_wifi(
        password=None,
        certificate_uuid=uuid,
        eap_client_configuration={
            "AcceptEAPTypes": [13],
            "TLSTrustedServerNames": ["radius.example.gov.vn"],
            "TLSMinimumVersion": "1.2",
            "TLSMaximumVersion": "1.3",
        },
    ).to_dict()
    assert d["EAPClientConfiguration"]["AcceptEAPTypes"] == [13]
    assert d["PayloadCertificateUUID"] == uuid


# --------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------


def full_profile(pki) -> Profile:
    scep = make_scep()
    p12 = make_pkcs12(pki)
    root = make_root(pki)
    inter = make_inter(pki)
    return Profile(
        identifier=f"{ORG}.baseline",
        display_name="Office iPad baseline",
        organization="Office",
        description="Baseline settings for office iPads",
        removal_disallowed=True,
        consent_text={"default": "Managed by the office.", "vi": "Thiết bị do văn phòng quản lý."},
        payloads=[
            root,
            inter,
            scep,
            p12,
            make_mdm(scep.uuid),
            make_wireguard(),
            make_ikev2(p12.uuid),
            make_passcode(),
            make_restrictions(),
            make_wifi(),
            make_wifi(
                identifier=f"{ORG}.wifi.eap",
                ssid="OFFICE-EAP",
                password=None,
                certificate_uuid=p12.uuid,
                eap_client_configuration={
                    "AcceptEAPTypes": [13],
                    "PayloadCertificateAnchorUUID": [root.uuid, inter.uuid],
                },
            ),
        ],
    )


def test_profile_with_every_payload_type_round_trips(pki):
    profile = full_profile(pki)
    data = profile.to_plist_bytes()
    assert data.startswith(b"<?xml")
    loaded = plistlib.loads(data)
    assert loaded == profile.to_dict()
    assert loaded["PayloadType"] == "Configuration"
    assert loaded["PayloadVersion"] == 1
    assert loaded["PayloadIdentifier"] == f"{ORG}.baseline"
    assert loaded["PayloadUUID"] == profile.uuid
    assert loaded["PayloadDisplayName"] == "Office iPad baseline"
    assert loaded["PayloadOrganization"] == "Office"
    assert loaded["PayloadDescription"] == "Baseline settings for office iPads"
    assert loaded["PayloadRemovalDisallowed"] is True
    assert loaded["PayloadScope"] == "System"
    assert loaded["ConsentText"]["default"] == "Managed by the office."
    types = [p["PayloadType"] for p in loaded["PayloadContent"]]
    assert set(types) == {
        "com.apple.security.root",
        "com.apple.security.pkcs1",
        "com.apple.security.scep",
        "com.apple.security.pkcs12",
        "com.apple.mdm",
        "com.apple.vpn.managed",
        "com.apple.mobiledevice.passwordpolicy",
        "com.apple.applicationaccess",
        "com.apple.wifi.managed",
    }
    # Data and nested structures survive the XML round trip unchanged.
    assert loaded["PayloadContent"][0]["PayloadContent"] == pki["root"]
    wg = next(p for p in loaded["PayloadContent"] if p.get("VPNSubType") == "com.wireguard.ios")
    assert wg["VendorConfig"]["WgQuickConfig"] == WG_CONF
    # Every payload read back validates again (as an upload would).
    for payload in loaded["PayloadContent"]:
        validate_payload_dict(payload)


def test_profile_add_and_dict_payloads(pki):
    root = make_root(pki)
    profile = Profile(identifier=f"{ORG}.p", display_name="P", organization="Office").add(root)
    profile.add(make_passcode().to_dict())  # a plain dict is validated too
    assert [p["PayloadType"] for p in profile.to_dict()["PayloadContent"]] == [
        "com.apple.security.root",
        "com.apple.mobiledevice.passwordpolicy",
    ]


def test_profile_refuses_duplicate_payload_identifier(pki):
    profile = Profile(
        identifier=f"{ORG}.p", display_name="P", organization="O",
        payloads=[make_passcode(), make_passcode()],
    )
    err = refused(profile.to_plist_bytes, "PayloadIdentifier", f"{ORG}.passcode")
    assert err.key == "PayloadContent[1].PayloadIdentifier"


def test_profile_refuses_duplicate_payload_uuid():
    uuid = "0F8FAD5B-D9CB-469F-A165-70867728950E"
    profile = Profile(
        identifier=f"{ORG}.p", display_name="P", organization="O",
        payloads=[make_passcode(uuid=uuid), make_restrictions(uuid=uuid)],
    )
    refused(profile.validate, "PayloadContent[1].PayloadUUID", uuid)


def test_profile_refuses_payload_reusing_profile_uuid():
    p = make_passcode()
    profile = Profile(identifier=f"{ORG}.p", display_name="P", organization="O", uuid=p.uuid, payloads=[p])
    refused(profile.validate, "PayloadUUID", "already used by the profile")


def test_profile_refuses_dangling_certificate_reference():
    profile = Profile(
        identifier=f"{ORG}.p", display_name="P", organization="O",
        payloads=[make_mdm("6F1A2B3C-4D5E-4F60-8172-93A4B5C6D7E8")],
    )
    refused(profile.validate, "PayloadContent[0].IdentityCertificateUUID", "no payload")


def test_profile_refuses_identity_reference_to_plain_certificate(pki):
    root = make_root(pki)
    profile = Profile(
        identifier=f"{ORG}.p", display_name="P", organization="O",
        payloads=[root, make_ikev2(root.uuid)],
    )
    refused(profile.validate, "IKEv2.PayloadCertificateUUID", "com.apple.security.root")


def test_profile_refuses_two_mdm_payloads():
    scep = make_scep()
    profile = Profile(
        identifier=f"{ORG}.p", display_name="P", organization="O",
        payloads=[scep, make_mdm(scep.uuid), make_mdm(scep.uuid, identifier=f"{ORG}.mdm2")],
    )
    refused(profile.validate, "PayloadType", "com.apple.mdm may appear only once")


def test_profile_refuses_bad_scope_and_identifier():
    bad_scope = Profile(identifier=f"{ORG}.p", display_name="P", organization="O", scope="Device")
    refused(bad_scope.validate, "PayloadScope", "System, User", "'Device'")
    bad_id = Profile(identifier="not reverse dns", display_name="P", organization="O")
    refused(bad_id.validate, "PayloadIdentifier", "format")


# --------------------------------------------------------------------------
# validate_payload_dict
# --------------------------------------------------------------------------


def test_validate_payload_dict_accepts_builder_output():
    p = make_restrictions()
    again = validate_payload_dict(p.to_dict())
    assert isinstance(again, Payload)
    assert again == p
    assert again.payload_type == "com.apple.applicationaccess"


def test_validate_payload_dict_refuses_unsupported_type():
    refused(lambda: validate_payload_dict({"PayloadType": "com.example.custom"}), "PayloadType", "not supported")
    refused(lambda: validate_payload_dict({"PayloadIdentifier": "a.b"}), "PayloadType is required")
    refused(lambda: validate_payload_dict(["not", "a", "dict"]), "dictionary")


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("PayloadUUID", "0f8fad5b-d9cb-469f-a165-70867728950e", "format"),  # must be uppercase
        ("PayloadUUID", "not-a-uuid", "format"),
        ("PayloadVersion", 2, "must be one of 1"),
        ("PayloadVersion", True, "must be an integer (got bool)"),
        ("PayloadIdentifier", "", "format"),
        ("PayloadDisplayName", None, "must be a string"),
        ("PayloadOrganization", 7, "must be a string (got int)"),
    ],
)
def test_common_keys_refused(key, value, fragment):
    d = make_passcode().to_dict()
    d[key] = value
    refused(lambda: validate_payload_dict(d), f"Passcode: {key}", fragment)


@pytest.mark.parametrize("key", ["PayloadIdentifier", "PayloadUUID", "PayloadVersion", "PayloadDisplayName"])
def test_common_required_keys(key):
    d = make_passcode().to_dict()
    del d[key]
    err = refused(lambda: validate_payload_dict(d), f"Passcode: {key} is required")
    assert err.key == key


# --------------------------------------------------------------------------
# Refusals: MDM
# --------------------------------------------------------------------------

SOME_UUID = "6F1A2B3C-4D5E-4F60-8172-93A4B5C6D7E8"


def test_mdm_missing_required_key():
    d = make_mdm(SOME_UUID).to_dict()
    del d["Topic"]
    err = refused(lambda: validate_payload_dict(d), "MDM: Topic is required")
    assert err.key == "Topic"


def test_mdm_server_url_must_be_https():
    refused(lambda: make_mdm(SOME_UUID, server_url="http://mdm.example.gov.vn"), "MDM: ServerURL", "^https://")


def test_mdm_topic_prefix():
    refused(lambda: make_mdm(SOME_UUID, topic="com.example.push"), "MDM: Topic", "com\\.apple\\.mgmt")


def test_mdm_identity_uuid_format():
    refused(lambda: make_mdm("not-a-uuid"), "MDM: IdentityCertificateUUID", "format")


def test_mdm_sign_message_type():
    refused(lambda: make_mdm(SOME_UUID, sign_message="yes"), "MDM: SignMessage must be a boolean (got str)")


def test_mdm_access_rights_not_bool():
    refused(lambda: make_mdm(SOME_UUID, access_rights=True), "MDM: AccessRights must be an integer (got bool)")


@pytest.mark.parametrize(
    "rights, fragment",
    [
        (0, "must not be 0"),
        (2, "must include 1"),  # install/remove profiles without inspect
        (2 | 4 | 8, "must include 1"),
        (128, "must include 64"),  # install provisioning profiles without inspect
        (1 | 128, "must include 64"),
        (8192, "bits Apple does not define"),
        (ACCESS_RIGHTS_ALL | 16384, "bits Apple does not define"),
        (-1, "bits Apple does not define"),
    ],
)
def test_mdm_access_rights_bad_combination(rights, fragment):
    err = refused(lambda: make_mdm(SOME_UUID, access_rights=rights), "MDM: AccessRights", fragment)
    assert err.key == "AccessRights"


@pytest.mark.parametrize("rights", [1, 1 | 2, 64 | 128, 16, 4 | 8, ACCESS_RIGHTS_ALL])
def test_mdm_access_rights_valid_combinations(rights):
    assert make_mdm(SOME_UUID, access_rights=rights).to_dict()["AccessRights"] == rights


def test_mdm_server_capability_values():
    refused(
        lambda: make_mdm(SOME_UUID, server_capabilities=["com.apple.mdm.unknown"]),
        "MDM: ServerCapabilities[0] must be one of",
        "com.apple.mdm.per-user-connections",
    )
    refused(
        lambda: make_mdm(SOME_UUID, server_capabilities=["com.apple.mdm.token"] * 2),
        "MDM: ServerCapabilities must not repeat",
    )


# --------------------------------------------------------------------------
# Refusals: SCEP
# --------------------------------------------------------------------------


def test_scep_keysize_out_of_rangelist():
    err = refused(
        lambda: make_scep(keysize=512),
        "SCEP: PayloadContent.Keysize must be one of 1024, 2048, 4096 (got 512)",
    )
    assert err.key == "PayloadContent.Keysize"


def test_scep_missing_url():
    d = make_scep().to_dict()
    del d["PayloadContent"]["URL"]
    refused(lambda: validate_payload_dict(d), "SCEP: PayloadContent.URL is required")


def test_scep_missing_payload_content():
    d = make_scep().to_dict()
    del d["PayloadContent"]
    refused(lambda: validate_payload_dict(d), "SCEP: PayloadContent is required")


def test_scep_subject_must_be_three_levels():
    # [["CN", "x"]] is one level short: each RDN is itself a list of pairs.
    refused(lambda: make_scep(subject=[["CN", "x"]]), "SCEP: PayloadContent.Subject[0][0] must be an array")


def test_scep_subject_pair_must_have_two_items_and_known_oid():
    refused(lambda: make_scep(subject=[[["CN"]]]), "PayloadContent.Subject[0][0]", "at least 2")
    refused(lambda: make_scep(subject=[[["Email", "a@b"]]]), "PayloadContent.Subject[0][0]", "dotted OID")


def test_scep_key_type_and_usage():
    refused(lambda: make_scep(key_type="EC"), "SCEP: PayloadContent.Key Type must be one of RSA")
    refused(lambda: make_scep(key_usage=2), "SCEP: PayloadContent.Key Usage must be one of 0, 1, 4, 5 (got 2)")
    refused(lambda: make_scep(retries=-1), "SCEP: PayloadContent.Retries must be at least 0")


def test_scep_url_format_and_challenge_not_echoed():
    refused(lambda: make_scep(url="scep.example.gov.vn"), "SCEP: PayloadContent.URL", "format")
    err = refused(lambda: make_scep(challenge=12345), "SCEP: PayloadContent.Challenge must be a string")
    assert "12345" not in str(err)


def test_scep_unknown_content_key():
    refused(lambda: make_scep(extra={"KeySize": 2048}), "SCEP: PayloadContent.KeySize is not a known key")


# --------------------------------------------------------------------------
# Refusals: certificates
# --------------------------------------------------------------------------


def test_root_certificate_must_be_der(pki):
    refused(lambda: make_root(pki, certificate_der=pki["root_pem"]), "Root certificate: PayloadContent", "PEM")
    refused(lambda: make_root(pki, certificate_der=b"\x30\x03junk"), "Root certificate: PayloadContent", "X.509")


def test_root_certificate_wrong_type(pki):
    refused(
        lambda: make_root(pki, certificate_der=pki["root"].hex()),
        "Root certificate: PayloadContent must be data (bytes) (got str)",
    )


def test_root_certificate_must_be_self_signed_ca(pki):
    refused(lambda: make_root(pki, certificate_der=pki["inter"]), "Root certificate: PayloadContent", "not a root")
    refused(lambda: make_root(pki, certificate_der=pki["leaf"]), "Root certificate: PayloadContent", "not a root")


def test_pkcs1_certificate_refusals(pki):
    refused(lambda: make_inter(pki, certificate_der=b"garbage"), "PKCS#1 certificate: PayloadContent", "X.509")
    d = make_inter(pki).to_dict()
    del d["PayloadContent"]
    refused(lambda: validate_payload_dict(d), "PKCS#1 certificate: PayloadContent is required")
    refused(lambda: make_inter(pki, filename=5), "PKCS#1 certificate: PayloadCertificateFileName must be a string")


def test_pkcs12_refusals(pki):
    refused(lambda: make_pkcs12(pki, password="wrong"), "PKCS#12: PayloadContent", "Password")
    refused(lambda: make_pkcs12(pki, data=b"not pkcs12"), "PKCS#12: PayloadContent")
    err = refused(lambda: make_pkcs12(pki, password=1234), "PKCS#12: Password must be a string (got int)")
    assert "1234" not in str(err)
    d = make_pkcs12(pki).to_dict()
    del d["PayloadContent"]
    refused(lambda: validate_payload_dict(d), "PKCS#12: PayloadContent is required")


# --------------------------------------------------------------------------
# Refusals: WireGuard VPN
# --------------------------------------------------------------------------


def test_wireguard_unsupported_wg_quick_key():
    conf = WG_CONF.replace("[Peer]", "Table = off\n\n[Peer]")
    err = refused(lambda: make_wireguard(wg_quick_config=conf), "VPN: VendorConfig.WgQuickConfig", "Table")
    assert err.key == "VendorConfig.WgQuickConfig"


def test_wireguard_bad_key_is_refused_without_echoing_secrets():
    conf = WG_CONF.replace(PRIVATE_KEY, PRIVATE_KEY[:-4] + "AAA=")
    broken = WG_CONF.replace(PRIVATE_KEY, "short")
    err = refused(lambda: make_wireguard(wg_quick_config=broken), "VendorConfig.WgQuickConfig", "PrivateKey")
    assert "short" not in str(err)
    make_wireguard(wg_quick_config=conf)  # still a valid 32-byte key
    no_key = WG_CONF.replace(f"PrivateKey = {PRIVATE_KEY}\n", "")
    refused(lambda: make_wireguard(wg_quick_config=no_key), "VendorConfig.WgQuickConfig", "no PrivateKey")
    no_peer = WG_CONF.split("[Peer]")[0]
    refused(lambda: make_wireguard(wg_quick_config=no_peer, remote_address="x"), "WgQuickConfig", "[Peer]")


def test_wireguard_remote_address_required_without_endpoint():
    conf = WG_CONF.replace("Endpoint = vpn.example.gov.vn:51820\n", "")
    refused(lambda: make_wireguard(wg_quick_config=conf), "VPN.RemoteAddress")
    assert make_wireguard(wg_quick_config=conf, remote_address="vpn").to_dict()["VPN"]["RemoteAddress"] == "vpn"


def test_wireguard_dict_rules():
    d = make_wireguard().to_dict()
    d["VPN"]["AuthenticationMethod"] = "Certificate"
    refused(lambda: validate_payload_dict(d), "VPN: VPN.AuthenticationMethod must be 'Password'")

    d = make_wireguard().to_dict()
    del d["VendorConfig"]["WgQuickConfig"]
    refused(lambda: validate_payload_dict(d), "VPN: VendorConfig.WgQuickConfig is required")

    d = make_wireguard().to_dict()
    del d["VPNSubType"]
    refused(lambda: validate_payload_dict(d), "VPN: VPNSubType is required when VPNType is 'VPN'")

    d = make_wireguard().to_dict()
    del d["UserDefinedName"]
    refused(lambda: validate_payload_dict(d), "VPN: UserDefinedName is required")


def test_wireguard_on_demand_must_be_integer_flag():
    d = make_wireguard().to_dict()
    d["VPN"]["OnDemandEnabled"] = True
    refused(lambda: validate_payload_dict(d), "VPN: VPN.OnDemandEnabled must be an integer (got bool)")
    d["VPN"]["OnDemandEnabled"] = 2
    refused(lambda: validate_payload_dict(d), "VPN: VPN.OnDemandEnabled must be one of 0, 1 (got 2)")


def test_wireguard_on_demand_rule_action():
    refused(
        lambda: make_wireguard(on_demand_rules=[{"Action": "Always"}]),
        "VPN: VPN.OnDemandRules[0].Action must be one of Allow, Connect, Disconnect, EvaluateConnection, Ignore",
    )
    refused(lambda: make_wireguard(on_demand_rules=[{"SSIDMatch": ["x"]}]), "VPN.OnDemandRules[0].Action is required")


def test_vpn_type_rangelist():
    d = make_wireguard().to_dict()
    d["VPNType"] = "OpenVPN"
    refused(lambda: validate_payload_dict(d), "VPN: VPNType must be one of VPN, L2TP, IPSec, IKEv2")


# --------------------------------------------------------------------------
# Refusals: IKEv2 VPN
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sa, fragment",
    [
        ({"EncryptionAlgorithm": "AES-512"}, "IKESecurityAssociationParameters.EncryptionAlgorithm must be one of"),
        ({"IntegrityAlgorithm": "MD5"}, "IKESecurityAssociationParameters.IntegrityAlgorithm must be one of"),
        ({"DiffieHellmanGroup": 3}, "IKESecurityAssociationParameters.DiffieHellmanGroup must be one of 1, 2, 5, 14"),
        ({"DiffieHellmanGroup": "14"}, "IKESecurityAssociationParameters.DiffieHellmanGroup must be an integer"),
        ({"LifeTimeInMinutes": 5}, "IKESecurityAssociationParameters.LifeTimeInMinutes must be between 10 and 1440"),
        ({"Cipher": "AES-256"}, "IKESecurityAssociationParameters.Cipher is not a known key"),
    ],
)
def test_ikev2_security_association_refused(sa, fragment):
    refused(lambda: make_ikev2(SOME_UUID, ike_sa_parameters=sa), "VPN: IKEv2.", fragment)


def test_ikev2_child_sa_refused():
    refused(
        lambda: make_ikev2(SOME_UUID, child_sa_parameters={"EncryptionAlgorithm": "Blowfish"}),
        "VPN: IKEv2.ChildSecurityAssociationParameters.EncryptionAlgorithm",
    )


def test_ikev2_missing_required_keys():
    d = make_ikev2(SOME_UUID).to_dict()
    del d["IKEv2"]["RemoteIdentifier"]
    err = refused(lambda: validate_payload_dict(d), "VPN: IKEv2.RemoteIdentifier is required")
    assert err.key == "IKEv2.RemoteIdentifier"
    d = make_ikev2(SOME_UUID).to_dict()
    del d["IKEv2"]
    refused(lambda: validate_payload_dict(d), "VPN: IKEv2 is required when VPNType is 'IKEv2'")
    d = make_ikev2(SOME_UUID).to_dict()
    del d["IKEv2"]["PayloadCertificateUUID"]
    refused(
        lambda: validate_payload_dict(d),
        "IKEv2.PayloadCertificateUUID is required when AuthenticationMethod is 'Certificate'",
    )


def test_ikev2_cross_key_rules():
    refused(
        lambda: make_ikev2(SOME_UUID, server_certificate_issuer_common_name=None),
        "VPN: IKEv2.ServerCertificateIssuerCommonName is required when CertificateType is set",
    )
    refused(lambda: make_ikev2(SOME_UUID, extra={"PPK": b"k" * 32}), "VPN: IKEv2.PPKIdentifier is required")
    d = make_ikev2(SOME_UUID).to_dict()
    d["VPNSubType"] = "com.example"
    refused(lambda: validate_payload_dict(d), "VPN: VPNSubType must be empty when VPNType is 'IKEv2'")


def test_ikev2_value_refusals():
    refused(lambda: make_ikev2("bad"), "VPN: IKEv2.PayloadCertificateUUID", "format")
    refused(lambda: make_ikev2(SOME_UUID, certificate_type="DSA"), "VPN: IKEv2.CertificateType must be one of")
    refused(lambda: make_ikev2(SOME_UUID, dead_peer_detection_rate="Often"), "VPN: IKEv2.DeadPeerDetectionRate")
    refused(
        lambda: make_ikev2(SOME_UUID, extra={"MTU": 9000}),
        "VPN: IKEv2.MTU must be between 1280 and 1400 (got 9000)",
    )
    d = make_ikev2(SOME_UUID).to_dict()
    d["IKEv2"]["ExtendedAuthEnabled"] = 2
    refused(lambda: validate_payload_dict(d), "VPN: IKEv2.ExtendedAuthEnabled must be one of 0, 1 (got 2)")
    d["IKEv2"]["ExtendedAuthEnabled"] = True
    refused(lambda: validate_payload_dict(d), "VPN: IKEv2.ExtendedAuthEnabled must be an integer (got bool)")
    err = refused(
        lambda: make_ikev2(SOME_UUID, extra={"SharedSecret": 42}), "VPN: IKEv2.SharedSecret must be a string"
    )
    assert "42" not in str(err)


# --------------------------------------------------------------------------
# Refusals: passcode
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_failed_attempts": 12}, "Passcode: maxFailedAttempts must be between 2 and 11 (got 12)"),
        ({"max_failed_attempts": 1}, "Passcode: maxFailedAttempts must be between 2 and 11 (got 1)"),
        ({"min_length": 17}, "Passcode: minLength must be between 0 and 16 (got 17)"),
        ({"max_inactivity": 16}, "Passcode: maxInactivity must be between 0 and 15 (got 16)"),
        ({"max_pin_age_in_days": 731}, "Passcode: maxPINAgeInDays must be between 0 and 730 (got 731)"),
        ({"pin_history": 0}, "Passcode: pinHistory must be between 1 and 50 (got 0)"),
        ({"min_complex_chars": 5}, "Passcode: minComplexChars must be between 0 and 4 (got 5)"),
        ({"max_grace_period": -1}, "Passcode: maxGracePeriod must be at least 0 (got -1)"),
        ({"min_length": "8"}, "Passcode: minLength must be an integer (got str)"),
        ({"min_length": True}, "Passcode: minLength must be an integer (got bool)"),
        ({"force_pin": 1}, "Passcode: forcePIN must be a boolean (got int)"),
        ({"extra": {"maxFailedAttempt": 5}}, "Passcode: maxFailedAttempt is not a known key"),
    ],
)
def test_passcode_refused(kwargs, message):
    refused(lambda: make_passcode(**kwargs), message)


def test_passcode_boundaries_accepted():
    d = make_passcode(max_failed_attempts=2, min_length=16, max_inactivity=15, pin_history=50).to_dict()
    assert (d["maxFailedAttempts"], d["minLength"], d["maxInactivity"], d["pinHistory"]) == (2, 16, 15, 50)


# --------------------------------------------------------------------------
# Refusals: restrictions
# --------------------------------------------------------------------------


def test_restrictions_unknown_key_refused():
    err = refused(
        lambda: make_restrictions(extra={"allowCammera": False}),
        "Restrictions: allowCammera is not a known key of com.apple.applicationaccess",
    )
    assert err.key == "allowCammera"
    d = make_restrictions().to_dict()
    d["allowTeleportation"] = True
    refused(lambda: validate_payload_dict(d), "Restrictions: allowTeleportation is not a known key")


def test_restrictions_any_reference_key_accepted():
    d = make_restrictions(
        extra={
            "allowManagedToWriteUnmanagedContacts": False,
            "allowUnmanagedToReadManagedContacts": False,
            "blockedAppBundleIDs": ["com.example.game"],
            "enforcedSoftwareUpdateDelay": 30,
            "ratingRegion": "gb",
        }
    ).to_dict()
    assert d["blockedAppBundleIDs"] == ["com.example.game"]
    assert d["enforcedSoftwareUpdateDelay"] == 30


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"allowCamera": "no"}, None),  # clashes with the typed argument
        ({"allowCloudPhotoLibrary": "no"}, "Restrictions: allowCloudPhotoLibrary must be a boolean (got str)"),
        ({"ratingApps": 1001}, "Restrictions: ratingApps must be between 0 and 1000 (got 1001)"),
        ({"enforcedSoftwareUpdateDelay": 0}, "Restrictions: enforcedSoftwareUpdateDelay must be between 1 and 90"),
        ({"safariAcceptCookies": 3.0}, "Restrictions: safariAcceptCookies must be one of 0, 1, 1.5, 2 (got 3.0)"),
        ({"ratingRegion": "vn"}, "Restrictions: ratingRegion must be one of us, au"),
        ({"blockedAppBundleIDs": "com.example.game"}, "Restrictions: blockedAppBundleIDs must be an array"),
        ({"blockedAppBundleIDs": [1]}, "Restrictions: blockedAppBundleIDs[0] must be a string"),
    ],
)
def test_restrictions_refused(extra, message):
    err = refused(lambda: make_restrictions(extra=extra), *(list(extra)))
    if message:
        assert message in str(err)


def test_restrictions_typed_argument_type():
    refused(lambda: make_restrictions(allow_camera=0), "Restrictions: allowCamera must be a boolean (got int)")


# --------------------------------------------------------------------------
# Refusals: Wi-Fi
# --------------------------------------------------------------------------


def test_wifi_encryption_type_rangelist():
    refused(
        lambda: make_wifi(encryption_type="WPA4"),
        "Wi-Fi: EncryptionType must be one of WEP, WPA, WPA2, WPA3, Any, None (got 'WPA4')",
    )


def test_wifi_ssid_required_and_checked():
    d = make_wifi().to_dict()
    del d["SSID_STR"]
    refused(lambda: validate_payload_dict(d), "Wi-Fi: SSID_STR is required unless DomainName is set")
    refused(lambda: make_wifi(ssid="x" * 33), "Wi-Fi: SSID_STR must be 1 to 32 bytes")
    refused(lambda: make_wifi(ssid=""), "Wi-Fi: SSID_STR must be 1 to 32 bytes")


def test_wifi_types_and_formats():
    refused(lambda: make_wifi(hidden_network="yes"), "Wi-Fi: HIDDEN_NETWORK must be a boolean (got str)")
    refused(lambda: make_wifi(auto_join=1), "Wi-Fi: AutoJoin must be a boolean (got int)")
    refused(lambda: make_wifi(password=None, certificate_uuid="zzz"), "Wi-Fi: PayloadCertificateUUID", "format")


def test_wifi_password_rules_do_not_echo_password():
    err = refused(lambda: make_wifi(password="short"), "Wi-Fi: Password must be 8 to 63 characters")
    assert "short" not in str(err)
    refused(lambda: make_wifi(encryption_type="None"), "Wi-Fi: Password must not be set when EncryptionType is 'None'")
    assert "Password" not in make_wifi(encryption_type="None", password=None).to_dict()


def test_wifi_eap_refusals():
    refused(
        lambda: make_wifi(password=None, eap_client_configuration={"AcceptEAPTypes": [99]}),
        "Wi-Fi: EAPClientConfiguration.AcceptEAPTypes[0] must be one of 13, 17, 18, 21, 23, 25, 43 (got 99)",
    )
    refused(
        lambda: make_wifi(password=None, eap_client_configuration={"UserName": "u"}),
        "Wi-Fi: EAPClientConfiguration.AcceptEAPTypes is required",
    )
    refused(
        lambda: make_wifi(password=None, eap_client_configuration={"AcceptEAPTypes": []}),
        "Wi-Fi: EAPClientConfiguration.AcceptEAPTypes must have at least 1 item",
    )
    refused(
        lambda: make_wifi(
            password=None,
            eap_client_configuration={"AcceptEAPTypes": [25], "TLSMinimumVersion": "1.3", "TLSMaximumVersion": "1.3"},
        ),
        "Wi-Fi: EAPClientConfiguration.OuterIdentity is required when TLSMinimumVersion is '1.3'",
    )
    refused(
        lambda: make_wifi(
            password=None,
            eap_client_configuration={"AcceptEAPTypes": [13], "TLSMinimumVersion": "1.2", "TLSMaximumVersion": "1.0"},
        ),
        "Wi-Fi: EAPClientConfiguration.TLSMinimumVersion must not exceed TLSMaximumVersion",
    )


def test_builder_extra_may_not_override_arguments():
    refused(lambda: make_wifi(extra={"SSID_STR": "other"}), "Wi-Fi: SSID_STR is set by an argument")
    refused(lambda: make_wifi(extra={"PayloadType": "com.apple.mdm"}), "Wi-Fi: PayloadType is set by an argument")
