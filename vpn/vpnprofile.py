"""The device side: client configs and the signed VPN profiles that carry them.

The device's private key leaves the server only here, inside a profile that
is signed (so the device knows it comes from us) and sent to exactly that
device as an InstallProfile command.
"""
from __future__ import annotations

import secrets
import uuid as uuidlib
from io import StringIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from wgconfig import WGConfig

from ipad_mdm.mobileconfig import Profile, ikev2_vpn_payload, pkcs12_payload, sign_profile, wireguard_vpn_payload

from .settings import VpnSettings

# Stable namespace so the same device + key always yields the same payload
# UUIDs: re-sending an unchanged profile then replaces it in place on iOS
# instead of creating a second VPN entry.
_NS = uuidlib.UUID("6f1c2a4e-3b7d-5e9f-8a1b-2c3d4e5f6a7b")
PERSISTENT_KEEPALIVE = 25  # seconds; keeps NAT mappings of mobile networks open


def profile_identifier(org_identifier: str) -> str:
    """One VPN profile per device: installing it again replaces the previous one."""
    return f"{org_identifier}.vpn"


def client_config(*, private_key: str, address_v4: str, address_v6: str | None, server_public_key: str,
                  preshared_key: str, vs: VpnSettings) -> str:
    """wg-quick text for one device (what the WireGuard app imports)."""
    wc = WGConfig()
    wc.add_attr(None, "PrivateKey", private_key)
    wc.add_attr(None, "Address", f"{address_v4}/32" + (f", {address_v6}/128" if address_v6 else ""))
    if vs.dns:
        wc.add_attr(None, "DNS", ", ".join(vs.dns))
    wc.add_peer(server_public_key)
    wc.add_attr(server_public_key, "PresharedKey", preshared_key)
    wc.add_attr(server_public_key, "Endpoint", vs.endpoint)
    wc.add_attr(server_public_key, "AllowedIPs", ", ".join(vs.allowed_ips))
    wc.add_attr(server_public_key, "PersistentKeepalive", PERSISTENT_KEEPALIVE)
    buf = StringIO()
    wc.write_to_fileobj(buf)
    return buf.getvalue()


def _sign(instance, profile: Profile) -> bytes:
    return sign_profile(profile.to_plist_bytes(), instance.signer_cert, instance.signer_key, [instance.ca.certificate])


def wireguard_profile(instance, vs: VpnSettings, *, device_udid: str, public_key: str, wg_quick: str) -> bytes:
    """The signed profile (DER CMS) with one com.apple.vpn.managed payload for the WireGuard app."""
    s = instance.settings
    seed = f"{device_udid}:{public_key}"
    payload = wireguard_vpn_payload(
        identifier=f"{profile_identifier(s.org_identifier)}.wireguard",
        display_name=vs.display_name,
        user_defined_name=vs.display_name,
        wg_quick_config=wg_quick,
        uuid=uuidlib.uuid5(_NS, "wg-payload:" + seed),
        organization=s.organization,
    )
    profile = Profile(
        identifier=profile_identifier(s.org_identifier),
        display_name=vs.display_name,
        organization=s.organization,
        description="Kết nối VPN tới mạng nội bộ / VPN to the office network",
        payloads=[payload],
        uuid=str(uuidlib.uuid5(_NS, "wg-profile:" + seed)),
        removal_disallowed=True,
    )
    return _sign(instance, profile)


def issue_vpn_certificate(instance, vs: VpnSettings, *, device_udid: str):
    """A client-authentication certificate for IKEv2, its key, and the IKE identity it carries.

    The identity is put in the SAN as a dNSName because iOS sends
    LocalIdentifier as an FQDN ID and gateways (strongSwan) accept an ID only
    if the certificate confirms it.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    local_id = f"{device_udid.lower()}.vpn.{instance.settings.org_identifier}"
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, local_id[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, instance.settings.organization),
    ])
    cert = instance.ca.issue_client(subject, key.public_key(), vs.ikev2_cert_days, dns_names=(local_id,))
    return cert, key, local_id


def _pkcs12(cert, key, password: str, name: str) -> bytes:
    # PBES1 3DES / SHA-1 MAC: the encryption iOS and macOS import everywhere;
    # OpenSSL 3's default (PBES2 AES-256) fails on older iOS releases. The
    # password travels in the same signed profile, so this is about import
    # compatibility, not secrecy.
    enc = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password.encode("utf-8"))
    )
    return pkcs12.serialize_key_and_certificates(name.encode("utf-8"), key, cert, None, enc)


def ikev2_profile(instance, vs: VpnSettings, *, device_udid: str, cert, key, local_id: str) -> bytes:
    """Signed profile: PKCS#12 identity + IKEv2 VPN payload authenticating with it."""
    s = instance.settings
    seed = f"{device_udid}:{cert.serial_number:x}"
    password = secrets.token_urlsafe(24)
    identity = pkcs12_payload(
        identifier=f"{profile_identifier(s.org_identifier)}.identity",
        display_name="Chứng thư số mạng riêng ảo (VPN)",
        data=_pkcs12(cert, key, password, local_id),
        password=password,
        filename="vpn-identity.p12",
        key_is_extractable=False,  # the key must not leave the device's keychain
        uuid=uuidlib.uuid5(_NS, "ikev2-identity:" + seed),
        organization=s.organization,
    )
    ca_cn = vs.ikev2_server_ca_cn or instance.ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    vpn = ikev2_vpn_payload(
        identifier=f"{profile_identifier(s.org_identifier)}.ikev2",
        display_name=vs.display_name,
        user_defined_name=vs.display_name,
        remote_address=vs.ikev2_remote_address,
        remote_identifier=vs.ikev2_remote_identifier,
        local_identifier=local_id,
        certificate_uuid=identity.uuid,
        certificate_type="RSA",
        server_certificate_issuer_common_name=ca_cn,
        server_certificate_common_name=vs.ikev2_remote_identifier,
        # Explicit suites: Apple's defaults include weak ones (3DES, DH group 2);
        # the gateway must offer these (strongSwan: aes256gcm16-prfsha384-ecp384).
        ike_sa_parameters={"EncryptionAlgorithm": "AES-256-GCM", "IntegrityAlgorithm": "SHA2-384",
                           "DiffieHellmanGroup": 20, "LifeTimeInMinutes": 1440},
        child_sa_parameters={"EncryptionAlgorithm": "AES-256-GCM", "IntegrityAlgorithm": "SHA2-384",
                             "DiffieHellmanGroup": 20, "LifeTimeInMinutes": 60},
        enable_pfs=True,
        dead_peer_detection_rate="Medium",
        uuid=uuidlib.uuid5(_NS, "ikev2-payload:" + seed),
        organization=s.organization,
    )
    profile = Profile(
        identifier=profile_identifier(s.org_identifier),
        display_name=vs.display_name,
        organization=s.organization,
        description="Kết nối VPN tới mạng nội bộ / VPN to the office network",
        payloads=[identity, vpn],
        uuid=str(uuidlib.uuid5(_NS, "ikev2-profile:" + seed)),
        removal_disallowed=True,
    )
    return _sign(instance, profile)
