"""com.apple.vpn.managed (WireGuard app, IKEv2)."""

from __future__ import annotations

from .spec import Key, _APPLE_UUID, _PayloadSpec, _b, _d, _fail, _flag, _i, _s, _strings
from .wgquick import _WIREGUARD_BUNDLE_IDS, _check_wg_quick


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



# Per-app VPN: the same settings, tied to managed apps by VPNUUID (the app's Attributes carry it).
_VPN_APPLAYER = _PayloadSpec(
    "com.apple.vpn.managed.applayer",
    "Per-app VPN",
    _VPN.keys + (_s("VPNUUID", required=True), _b("OnDemandMatchAppEnabled")),
    rules=(_vpn_rule,),
)
