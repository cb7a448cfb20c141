"""VPN providers as data (issue #19): OpenVPN Connect from an imported .ovpn, or any VPN app.

A security officer defines a provider once (API, CLI); the server then builds each iPad's signed
`com.apple.vpn.managed` profile from it, recognises it in ProfileList answers, and a migration
campaign can move devices onto it or off it. WireGuard and IKEv2 are built in: they keep their own
code paths (vpn.service) and appear here only by key.

Secrets of a provider (keys inline in the .ovpn, VendorConfig keys marked secret, an imported
identity) are stored as Fernet tokens under the instance data key and never echoed; they join the
payload only inside the profile signed for one iPad. Takes an open session, never commits.
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
import secrets
import uuid as uuidlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12
from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.refusal import Refusal
from ipad_mdm.mobileconfig import PayloadError, Profile, pkcs12_payload, sign_profile, validate_payload_dict

from . import vpnprofile
from .models import PROVIDER_AUTH, PROVIDER_KINDS, VpnCertificate, VpnProvider
from .ovpn import OPENVPN_CONNECT_BUNDLE_ID, OvpnError, parse_ovpn

BUILTIN = {"wireguard": "WireGuard", "ikev2": "IKEv2"}
_FIELD_VI = {"key": "mã nhà cung cấp", "name": "tên nhà cung cấp", "vpn_subtype": "mã ứng dụng VPN",
             "remote_address": "địa chỉ máy chủ VPN", "provider_bundle_id": "mã phần mở rộng của ứng dụng VPN",
             "provider_type": "kiểu phần mở rộng"}
UNKNOWN = "unknown"
_KEY = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
_BUNDLE = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_VENDOR_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VERIFICATION_KINDS = ("none", "wireguard_handshake", "openvpn_status", "log_pattern")
_NS = uuidlib.UUID("0b6f3c1e-8d2a-4c55-9a61-5e0d4f2b7c19")


class ProviderError(Refusal):
    """Input that cannot define a provider; `status` is the HTTP answer (nothing is stored)."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_provider", *, vi: str | None = None):
        super().__init__(message, vi)
        self.status, self.code = status, code


def profile_identifier(org_identifier: str, key: str) -> str:
    """The profile a provider's iPads carry: the built-in one ({org}.vpn) for WireGuard and IKEv2, one of
    its own beside it for a defined provider, so installing B never replaces A."""
    builtin = vpnprofile.profile_identifier(org_identifier)
    return builtin if key in BUILTIN else f"{builtin}.p.{key}"


# ------------------------------------------------------------------ definition

def _str(body: dict, name: str, *, required: bool = True, limit: int = 255) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ProviderError(f"{name} must be a non-empty string of at most {limit} characters", vi=f"Vui lòng nhập {_FIELD_VI.get(name, name)} (tối đa {limit} ký tự).")
    return value.strip()


def _vendor_value(key: str, value):
    if not _VENDOR_KEY.match(key):
        raise ProviderError(f"vendor_config key {key[:70]!r} is not a valid key name", vi=f"Khóa cấu hình “{key[:70]}” không hợp lệ (chữ, số, dấu chấm, gạch dưới, gạch ngang).")
    # What VPN apps read from VendorConfig: strings, integers, booleans (a plist date, data or
    # nested dictionary would be a guess at the app's format).
    if isinstance(value, bool) or isinstance(value, int) and -2**63 <= value < 2**63:
        return value
    if isinstance(value, str) and len(value) <= 64 * 1024:
        return value
    raise ProviderError(f"vendor_config key {key!r}: {type(value).__name__} is not a type a VPN app reads "
                        "(string, integer or boolean)", code="vendor_config_type",
                        vi=f"Giá trị của khóa “{key}” phải là chuỗi, số nguyên hoặc đúng/sai.")


def _on_demand(body: dict) -> dict:
    spec = body.get("on_demand")
    if spec is None:
        return {}
    if not isinstance(spec, dict) or set(spec) - {"enabled", "rules"} or not isinstance(spec.get("enabled", True), bool):
        raise ProviderError("on_demand must be {\"enabled\": true|false, \"rules\": [OnDemandRules …]}", vi="Thiết lập tự kết nối (on demand) không hợp lệ.")
    rules = spec.get("rules", [])
    if not isinstance(rules, list) or len(rules) > 32 or not all(isinstance(r, dict) for r in rules):
        raise ProviderError("on_demand.rules must be a list of at most 32 OnDemandRules dictionaries", vi="Quy tắc tự kết nối phải là danh sách tối đa 32 quy tắc.")
    return {"OnDemandEnabled": 1 if spec.get("enabled", True) else 0, **({"OnDemandRules": rules} if rules else {})}


def _identity(body: dict, inline_cert: str | None, inline_key: str | None) -> tuple[bytes, str, str] | None:
    """(PKCS#12, password, subject) of an imported identity: an upload, or the .ovpn's inline cert+key."""
    p12_b64 = body.get("identity_p12")
    if p12_b64 is not None:
        password = body.get("identity_password")
        if not isinstance(p12_b64, str) or not isinstance(password, str):
            raise ProviderError("identity_p12 (base64) and identity_password (string) go together", vi="Vui lòng gửi kèm tệp PKCS#12 và mật khẩu của nó.")
        try:
            data = base64.b64decode(p12_b64, validate=True)
            key, cert, _extra = pkcs12.load_key_and_certificates(data, password.encode())
        except (binascii.Error, ValueError):
            raise ProviderError("identity_p12 is not a PKCS#12 that opens with identity_password",
                                code="identity_unreadable",
                                vi="Tệp PKCS#12 không mở được với mật khẩu đã nhập.") from None
        if key is None or cert is None:
            raise ProviderError("identity_p12 must hold a certificate and its private key", code="identity_unreadable",
                                vi="Tệp PKCS#12 phải chứa chứng thư số và khóa bí mật của nó.")
        return data, password, cert.subject.rfc4514_string()[:255]
    if inline_cert and inline_key:
        try:
            cert = x509.load_pem_x509_certificate(inline_cert.replace("\\n", "\n").encode())
            key = load_pem_private_key(inline_key.replace("\\n", "\n").encode(), None)
        except ValueError:
            raise ProviderError("the .ovpn's inline <cert>/<key> cannot be read", code="identity_unreadable",
                                vi="Không đọc được chứng thư số và khóa trong tệp .ovpn.") from None
        password = secrets.token_urlsafe(18)
        data = pkcs12.serialize_key_and_certificates(b"vpn", key, cert, None, _p12_encryption(password))
        return data, password, cert.subject.rfc4514_string()[:255]
    return None


def _p12_encryption(password: str):
    from cryptography.hazmat.primitives import serialization

    # The encryption every iPadOS imports (see vpnprofile._pkcs12).
    return (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
            .build(password.encode()))


def define(session: Session, instance, body: dict, *, by: str) -> VpnProvider:
    """Create a provider from the API's/CLI's JSON; ProviderError (4xx) and nothing stored on bad input."""
    if not isinstance(body, dict):
        raise ProviderError("the request body must be a JSON object", vi="Dữ liệu gửi lên không hợp lệ.")
    key = _str(body, "key", limit=40)
    if not _KEY.match(key) or key in BUILTIN or key == UNKNOWN:
        raise ProviderError("key must be 2-40 characters a-z, 0-9 and '-', starting with a letter, and not "
                            f"{', '.join([*BUILTIN, UNKNOWN])}",
                            vi="Mã nhà cung cấp gồm 2–40 ký tự chữ thường, chữ số và dấu gạch ngang, bắt đầu bằng chữ, "
                               "và không trùng mã dành sẵn cho VPN có sẵn.")
    if session.scalar(select(VpnProvider.id).where(VpnProvider.key == key)) is not None:
        raise ProviderError(f"a VPN provider with key {key!r} already exists", 409, "provider_exists",
                            vi=f"Đã có nhà cung cấp VPN với mã “{key}”.")
    name = _str(body, "name")
    kind = body.get("kind")
    if kind not in PROVIDER_KINDS:
        raise ProviderError(f"kind must be one of {', '.join(PROVIDER_KINDS)}", vi="Vui lòng chọn loại nhà cung cấp VPN.")
    auth = body.get("auth")
    if auth not in PROVIDER_AUTH:
        raise ProviderError("a VPN provider needs an authentication: auth must be device_certificate (issued to each "
                            "iPad by this server's CA) or imported_identity", code="no_authentication",
                            vi="Vui lòng chọn cách xác thực: chứng thư số cấp riêng cho từng iPad hoặc chứng thư số nhập từ bên ngoài.")
    vendor: dict = {}
    secret: dict = {}
    options: dict = _on_demand(body)
    inline_cert = inline_key = None
    if kind == "openvpn":
        text = body.get("ovpn")
        if not isinstance(text, str):
            raise ProviderError("ovpn (the text of the .ovpn file) is required for an OpenVPN provider", vi="Vui lòng chọn tệp cấu hình OpenVPN (.ovpn).")
        try:
            cfg = parse_ovpn(text)
        except OvpnError as exc:
            raise ProviderError(f"ovpn: {exc}", code="ovpn_invalid", vi=f"Tệp .ovpn không dùng được: {exc.vi}") from None
        vendor, secret = dict(cfg.vendor_config), dict(cfg.secret_config)
        inline_cert, inline_key = vendor.pop("cert", None), secret.pop("key", None)
        subtype = OPENVPN_CONNECT_BUNDLE_ID
        options["RemoteAddress"] = "DEFAULT"  # OpenVPN Connect takes its servers from VendorConfig
    else:
        subtype = _str(body, "vpn_subtype", limit=155)
        if not _BUNDLE.match(subtype):
            raise ProviderError("vpn_subtype must be the VPN app's bundle identifier (for example vn.gov.example.vpn)", vi="Mã ứng dụng VPN (bundle ID) không hợp lệ, ví dụ vn.gov.example.vpn.")
        raw = body.get("vendor_config", {})
        if not isinstance(raw, dict) or len(raw) > 200:
            raise ProviderError("vendor_config must be an object of at most 200 keys", vi="Cấu hình của ứng dụng VPN không hợp lệ (tối đa 200 khóa).")
        secret_keys = body.get("secret_keys", [])
        if not isinstance(secret_keys, list) or not all(isinstance(k, str) and k in raw for k in secret_keys):
            raise ProviderError("secret_keys must list keys of vendor_config", vi="Các khóa bí mật phải là khóa có trong cấu hình của ứng dụng VPN.")
        for k, v in raw.items():
            (secret if k in secret_keys else vendor)[k] = _vendor_value(k, v)
        for opt, vpn_key in (("remote_address", "RemoteAddress"), ("provider_bundle_id", "ProviderBundleIdentifier"),
                             ("provider_type", "ProviderType")):
            if body.get(opt) is not None:
                options[vpn_key] = _str(body, opt)
    identity = None
    if auth == "imported_identity":
        identity = _identity(body, inline_cert, inline_key)
        if identity is None:
            raise ProviderError("auth imported_identity needs identity_p12 + identity_password, or an .ovpn with inline "
                                "<cert> and <key>", code="no_authentication",
                                vi="Vui lòng gửi kèm tệp PKCS#12 (hoặc tệp .ovpn có sẵn chứng thư số và khóa).")
    per_app = body.get("per_app_bundle_ids", [])
    if not isinstance(per_app, list) or len(per_app) > 50 or not all(isinstance(b, str) and _BUNDLE.match(b) for b in per_app):
        raise ProviderError("per_app_bundle_ids must list the bundle identifiers of the managed apps whose traffic "
                            "alone goes through this VPN (for example the document app)",
                            vi="Danh sách ứng dụng dùng VPN riêng phải là mã ứng dụng (bundle ID), mỗi dòng một mã.")
    recognise = body.get("recognise", [])
    if not isinstance(recognise, list) or not all(isinstance(p, str) and 0 < len(p) <= 255 for p in recognise):
        raise ProviderError("recognise must be a list of profile identifier patterns (for example vn.gov.office.openvpn*)", vi="Mẫu nhận diện hồ sơ VPN không hợp lệ, ví dụ vn.gov.office.openvpn*.")
    verification = body.get("verification") or {"kind": "none"}
    if not isinstance(verification, dict) or verification.get("kind") not in VERIFICATION_KINDS:
        raise ProviderError(f"verification.kind must be one of {', '.join(VERIFICATION_KINDS)}",
                            vi="Vui lòng chọn cách ghi nhận kết nối VPN.")
    if verification["kind"] in ("openvpn_status", "log_pattern"):
        path = verification.get("path")
        if not isinstance(path, str) or not path.startswith("/") or set(verification) - {"kind", "path", "pattern"}:
            raise ProviderError(f"verification {verification['kind']} needs path: the file the VPN server writes (absolute)",
                                vi="Vui lòng nhập đường dẫn đầy đủ của tệp do máy chủ VPN ghi (bắt đầu bằng /).")
    if verification["kind"] == "log_pattern":
        from .sightings import DumpError, compile_log_pattern

        try:
            compile_log_pattern(verification.get("pattern"))
        except DumpError as exc:
            raise ProviderError(f"verification.pattern: {exc}", code="verification_invalid",
                                vi="Mẫu đọc nhật ký không hợp lệ: cần biểu thức chính quy có nhóm (?P<cn>…) và "
                                   "(?P<epoch>…) hoặc (?P<iso>…).") from None
    fernet = instance.fernet()
    row = VpnProvider(
        key=key, name=name, kind=kind, vpn_subtype=subtype, vendor_config=vendor, auth=auth, vpn_options=options,
        secret_config_enc=fernet.encrypt(json.dumps(secret).encode()).decode() if secret else None,
        secret_keys=sorted(secret),
        identity_enc=(fernet.encrypt(json.dumps({"p12": base64.b64encode(identity[0]).decode(),
                                                 "password": identity[1]}).encode()).decode() if identity else None),
        identity_subject=identity[2] if identity else None, recognise=list(recognise), verification=verification,
        per_app_bundle_ids=list(dict.fromkeys(per_app)),
        created_by=by[:128], created_at=utcnow(), updated_at=utcnow())
    try:  # the payload an iPad would get must pass the profile rules before anything is stored
        _vpn_payload(row, instance.settings.organization, {**vendor, **secret}, "00000000-0000-0000-0000-000000000000")
    except PayloadError as exc:
        raise ProviderError(f"the VPN payload would be invalid: {exc}", code="payload_invalid",
                            vi="Cấu hình VPN tạo ra sẽ không hợp lệ với iPad; vui lòng kiểm tra lại các thiết lập.") from None
    session.add(row)
    session.flush()
    return row


def get(session: Session, key: str) -> VpnProvider | None:
    return session.scalar(select(VpnProvider).where(VpnProvider.key == key))


def exists(session: Session, key: str) -> bool:
    return key in BUILTIN or get(session, key) is not None


def describe(row: VpnProvider) -> dict:
    """What the API and CLI show: never a secret, only which secret keys are held."""
    return {
        "key": row.key, "name": row.name, "kind": row.kind, "vpn_subtype": row.vpn_subtype, "auth": row.auth,
        "vendor_config": row.vendor_config, "secret_keys_held": sorted(row.secret_keys or ()),
        "identity_subject": row.identity_subject, "vpn_options": row.vpn_options, "recognise": row.recognise,
        "verification": row.verification, "per_app_bundle_ids": row.per_app_bundle_ids or [],
        "vpn_uuid": vpn_uuid(row) if row.per_app_bundle_ids else None, "created_by": row.created_by, "created_at": row.created_at.isoformat(),
        "builtin": False,
    }


def _secret_config(row: VpnProvider, instance) -> dict:
    if not row.secret_config_enc:
        return {}
    return json.loads(instance.fernet().decrypt(row.secret_config_enc.encode()))


def list_all(session: Session) -> list[dict]:
    builtin = [{"key": k, "name": n, "kind": k, "builtin": True} for k, n in BUILTIN.items()]
    return builtin + [describe(r) for r in session.scalars(select(VpnProvider).order_by(VpnProvider.key))]


# ------------------------------------------------------------------ recognition

def recognise(org_identifier: str, providers: list[VpnProvider], entry: dict) -> tuple[str, bool] | None:
    """(provider key, managed by us) of one ProfileList entry, or None when it holds no VPN."""
    ident = str(entry.get("PayloadIdentifier", ""))
    payloads = [p for p in entry.get("PayloadContent") or () if isinstance(p, dict)]
    vpn = [p for p in payloads if p.get("PayloadType") in ("com.apple.vpn.managed", "com.apple.vpn.managed.applayer")]
    if not vpn:
        return None
    ours = vpnprofile.profile_identifier(org_identifier)
    if ident == ours:
        suffix = str(vpn[0].get("PayloadIdentifier", "")).rsplit(".", 1)[-1]
        return (suffix if suffix in BUILTIN else UNKNOWN), True
    if ident.startswith(ours + ".p."):
        return ident[len(ours) + 3:], True
    for row in providers:
        if any(fnmatch.fnmatchcase(ident, pattern) for pattern in row.recognise or ()):
            return row.key, False
    return UNKNOWN, False


# ------------------------------------------------------------------ the profile for one iPad

def vpn_uuid(row: VpnProvider) -> str:
    """The per-app VPN's VPNUUID: stable for a provider, so the apps' attributes stay right across reinstalls."""
    return str(uuidlib.uuid5(_NS, f"vpnuuid:{row.key}")).upper()


def _vpn_payload(row: VpnProvider, organization: str, vendor: dict, cert_uuid: str):
    options = dict(row.vpn_options or {})
    vpn = {"AuthenticationMethod": "Certificate", "PayloadCertificateUUID": cert_uuid, **options}
    d = {
        "PayloadType": "com.apple.vpn.managed", "PayloadVersion": 1, "PayloadDisplayName": row.name,
        "PayloadIdentifier": f"{row.key}.vpn", "PayloadUUID": str(uuidlib.uuid5(_NS, f"vpn:{row.key}:{cert_uuid}")).upper(),
        "PayloadOrganization": organization, "VPNType": "VPN", "VPNSubType": row.vpn_subtype,
        "UserDefinedName": row.name, "VendorConfig": vendor, "VPN": vpn,
    }
    if row.per_app_bundle_ids:  # only the listed managed apps' traffic, matched by VPNUUID
        d.update(PayloadType="com.apple.vpn.managed.applayer", VPNUUID=vpn_uuid(row), OnDemandMatchAppEnabled=True)
    return validate_payload_dict(d)


def app_attributes_settings(row: VpnProvider) -> dict | None:
    """The Settings command that ties the listed managed apps to this per-app VPN (None: device-wide VPN)."""
    if not row.per_app_bundle_ids:
        return None
    return {"Settings": [{"Item": "ApplicationAttributes", "Identifier": bundle_id,
                          "Attributes": {"VPNUUID": vpn_uuid(row)}} for bundle_id in row.per_app_bundle_ids]}


def build_profile(session: Session, instance, row: VpnProvider, device) -> bytes:
    """The signed profile installing `row` on `device`: its identity (issued by our CA, or the imported
    one) and the VPN payload authenticating with it. A device certificate is recorded, so a cut puts
    it on hold in the CRL like an IKEv2 certificate."""
    from .settings import vpn_settings

    s = instance.settings
    ident = profile_identifier(s.org_identifier, row.key)
    if row.auth == "device_certificate":
        vs = vpn_settings(instance)
        now = utcnow()
        for old in session.scalars(select(VpnCertificate).where(
                VpnCertificate.device_id == device.id, VpnCertificate.provider_key == row.key,
                VpnCertificate.state.in_(("active", "cut")))):
            old.state, old.removed_at, old.reason = "removed", now, "superseded"
        cert, key, local_id = vpnprofile.issue_vpn_certificate(instance, vs, device_udid=device.udid)
        password = secrets.token_urlsafe(24)
        data = pkcs12.serialize_key_and_certificates(local_id.encode(), key, cert, None, _p12_encryption(password))
        session.add(VpnCertificate(
            device_id=device.id, serial=f"{cert.serial_number:x}", provider_key=row.key,
            sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(), local_identifier=local_id,
            not_after=cert.not_valid_after_utc, issued_at=now))
        seed = f"{device.udid}:{cert.serial_number:x}"
    else:
        sealed = json.loads(instance.fernet().decrypt(row.identity_enc.encode()))
        data, password = base64.b64decode(sealed["p12"]), sealed["password"]
        seed = f"{device.udid}:{row.key}:imported"
    identity = pkcs12_payload(
        identifier=f"{ident}.identity", display_name=f"Chứng thư số {row.name}", data=data, password=password,
        filename="vpn-identity.p12", key_is_extractable=False, uuid=uuidlib.uuid5(_NS, "identity:" + seed),
        organization=s.organization)
    vendor = {**row.vendor_config, **_secret_config(row, instance)}
    payload = _vpn_payload(row, s.organization, vendor, identity.uuid)
    profile = Profile(
        identifier=ident, display_name=row.name, organization=s.organization,
        description="Kết nối mạng riêng ảo (VPN) tới mạng nội bộ / VPN to the office network",
        payloads=[identity, payload], uuid=str(uuidlib.uuid5(_NS, "profile:" + seed)), removal_disallowed=True)
    return sign_profile(profile.to_plist_bytes(), instance.signer_cert, instance.signer_key, [instance.ca.certificate])
