"""Declarative management against Apple's schemas, assets fetched with the device identity,
legacy profiles, and bad input at every DDM endpoint (4xx, a reason, nothing stored)."""
from __future__ import annotations

import base64
import json
import plistlib
import warnings

import pytest
from cryptography import x509
from sqlalchemy import func, select

from declarative import catalog
from mdm import Device, StatusReportRecord
from tests import apple_schema
from tests.test_ddm import PASSCODE, UPDATE, create, ddm_server  # noqa: F401  (fixture)
from tests.test_gateway import api, enroll

TYPE_NAMES = {str: "<string>", bool: "<boolean>", int: "<integer>", dict: "<dictionary>", list: "<array>"}


def _schema_available() -> bool:
    if apple_schema.schema_root() is None:
        warnings.warn("Apple's schemas not found (set APPLE_DM_SCHEMAS); checked against the project's catalog only")
        return False
    return True


def test_catalog_states_apple_keys_types_and_ranges():
    """The project's own statement of the keys it relies on agrees with Apple's YAML."""
    if not _schema_available():
        assert catalog.TYPES
        return
    schemas = apple_schema.declaration_schemas()

    def compare(ours: dict, theirs: list, where: str):
        by_key = {k["key"]: k for k in theirs}
        for key, f in ours.items():
            assert key in by_key, f"{where}{key} is not in Apple's schema"
            spec = by_key[key]
            assert TYPE_NAMES[f.type] == spec["type"], f"{where}{key}: {f.type} vs {spec['type']}"
            assert f.required == (spec.get("presence") == "required"), f"{where}{key}: presence differs"
            assert not apple_schema._ios_unavailable(spec), f"{where}{key}: unavailable on iPadOS"
            if f.enum:
                assert set(f.enum) <= set(spec.get("rangelist") or ()), f"{where}{key}: values outside rangelist"
            rng = spec.get("range") or {}
            if "min" in rng:
                assert f.min is not None and f.min >= rng["min"], f"{where}{key}: min"
            if "max" in rng:
                assert f.max is not None and f.max <= rng["max"], f"{where}{key}: max"
            if f.sub is not None and spec.get("subkeys"):
                compare(f.sub, spec["subkeys"], f"{where}{key}.")

    for dtype, t in catalog.TYPES.items():
        assert dtype in schemas, f"{dtype}: no Apple schema"
        if dtype != "com.apple.management.properties":
            compare(t.keys, schemas[dtype]["payloadkeys"], f"{dtype}: ")


def test_everything_the_server_emits_validates(ddm_server):  # noqa: F811
    server = ddm_server
    admin = api(server, "it_admin")
    r = admin.post("/api/v1/profiles", json={
        "identifier": "vpcp.wifi", "display_name": "Wi-Fi VPCP",
        "payloads": [{"PayloadType": "com.apple.wifi.managed", "PayloadIdentifier": "vpcp.wifi.p",
                      "PayloadDisplayName": "Wi-Fi", "SSID_STR": "VPCP", "EncryptionType": "WPA2",
                      "Password": "mat-khau-wifi-123"}]})
    assert r.status_code == 201, r.text
    specs = [
        PASSCODE, UPDATE,
        {"identifier": "vpcp.su-settings", "type": "softwareupdate.settings", "display_name": "Cập nhật",
         "payload": {"Notifications": True, "Deferrals": {"CombinedPeriodInDays": 7}, "RecommendedCadence": "Newest",
                     "AutomaticActions": {"Download": "AlwaysOn", "InstallOSUpdates": "AlwaysOn"}}},
        {"identifier": "vpcp.ca", "type": "asset.credential.certificate", "display_name": "CA văn phòng",
         "payload": {}, "source": {"instance_ca": True}},
        {"identifier": "vpcp.ca-trust", "type": "security.certificate", "display_name": "Tin cậy CA",
         "payload": {"CredentialAssetReference": "vpcp.ca"}},
        {"identifier": "vpcp.vpn-id", "type": "asset.credential.identity", "display_name": "Định danh VPN",
         "payload": {"Accessible": "AfterFirstUnlock"}, "source": {"device_identity": {"days": 90, "purpose": "vpn"}}},
        {"identifier": "vpcp.vpn-identity", "type": "security.identity", "display_name": "Định danh VPN",
         "payload": {"CredentialAssetReference": "vpcp.vpn-id"}},
        {"identifier": "vpcp.wifi-legacy", "type": "legacy", "display_name": "Wi-Fi (hồ sơ)", "payload": {},
         "source": {"profile": "vpcp.wifi"}},
        {"identifier": "vpcp.org", "type": "management.organization-info", "display_name": "Văn phòng",
         "payload": {"Name": "Văn phòng Chính phủ", "Email": "cntt@vpcp.gov.vn"}},
        {"identifier": "vpcp.props", "type": "management.properties", "display_name": "Thuộc tính",
         "payload": {"unit": "TTTH", "ring": "pilot"}},
        {"identifier": "vpcp.docs-app", "type": "app.managed", "display_name": "Ứng dụng văn bản",
         "payload": {"AppStoreID": "1234567890", "InstallBehavior": {"Install": "Required"}}},
    ]
    for spec in specs:
        create(admin, spec, assign={"all": True})
    r = admin.post("/api/v1/declarations", json={
        "identifier": "vpcp.act", "type": "activation.simple", "display_name": "Kích hoạt",
        "payload": {"StandardConfigurations": ["vpcp.passcode"], "Predicate": "@status(device.model.family) == 'iPad'"}})
    assert r.status_code == 201, r.text
    admin.post("/api/v1/declarations/vpcp.act/assign", json={"all": True})

    sim = enroll(server)
    docs = sim.ddm.declarations
    assert len(docs) >= len(specs) + 3
    schema = _schema_available()
    for doc in docs.values():
        doc = {k: v for k, v in doc.items() if not k.startswith("_")}
        if schema:
            assert apple_schema.declaration_problems(doc) == [], doc["Identifier"]
        assert catalog.validate_payload(catalog.TYPES[doc["Type"]], doc["Payload"], rendered=True)
    # The protocol answers and the command, too.
    if schema:
        tokens = sim._json("tokens")
        assert apple_schema.problems(tokens, apple_schema.load("declarative/protocol/tokensresponse.yaml")["payloadkeys"]) == []
        items = sim._json("declaration-items")
        assert apple_schema.problems(items, apple_schema.load(
            "declarative/protocol/declarationitemsresponse.yaml")["payloadkeys"]) == []
        cmd = next(c for c in sim.handled if c["Command"]["RequestType"] == "DeclarativeManagement")["Command"]
        spec = apple_schema.load("mdm/commands/declarativemanagement.yaml")["payloadkeys"]
        assert apple_schema.problems({k: v for k, v in cmd.items() if k != "RequestType"}, spec) == []
        checkin = apple_schema.load("mdm/checkin/declarativemanagement.yaml")["payloadkeys"]
        sent = {"MessageType": "DeclarativeManagement", "UDID": sim.udid, "Endpoint": "tokens"}
        ours = {k["key"]: k for k in checkin}
        assert all(ours[k]["type"] == "<string>" for k in sent)

    # What the assets delivered: the office CA, and this iPad's own VPN identity from that CA.
    ca_cert, is_identity = sim.ddm.certificates["vpcp.ca-trust"]
    assert ca_cert == sim.ca_cert and is_identity is False
    vpn_cert, is_identity = sim.ddm.certificates["vpcp.vpn-identity"]
    assert is_identity and vpn_cert.issuer == sim.ca_cert.subject and sim.udid in vpn_cert.subject.rfc4514_string()
    assert "vpcp.wifi" in sim.state.installed_profiles  # the legacy profile, signed, verified, installed
    # The identity is kept across syncs (same bytes, same token) and never shown by the API.
    asset_doc = docs["vpcp.vpn-id"]
    assert sim.ddm_sync() is False
    shown = admin.get("/api/v1/declarations/vpcp.vpn-id").json()
    assert "Identity" not in json.dumps(shown) and "Password" not in json.dumps(shown)
    # Another device, or nobody, cannot fetch this iPad's asset data.
    url = asset_doc["Payload"]["Reference"]["DataURL"]
    anon = server.http()
    assert anon.get(url).status_code == 401
    other = enroll(server)
    r = other.client.get(url, headers={"Mdm-Signature": other.sign(b"")})
    assert r.status_code == 200
    assert json.loads(r.content)["Identity"] != json.loads(sim.ddm.assets["vpcp.vpn-id"])["Identity"]
    admin.post("/api/v1/declarations/vpcp.vpn-identity/unassign", json={"all": True})
    admin.post("/api/v1/declarations/vpcp.vpn-id/unassign", json={"all": True})
    # The configuration alone brings its asset to the device it is assigned to, and only there.
    admin.post("/api/v1/declarations/vpcp.vpn-identity/assign", json={"devices": [sim.udid]})
    assert other.client.get(url, headers={"Mdm-Signature": other.sign(b"")}).status_code == 404
    sim.close()
    other.close()


def _reports(server) -> int:
    with server.session() as s:
        return s.scalar(select(func.count()).select_from(StatusReportRecord))


def _raw_status(sim, body: bytes):
    return sim.ddm_request("status", body)


BAD_STATUS = [
    (b"{not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (json.dumps({"StatusItems": []}).encode(), "StatusItems must be an object"),
    (b"[" * 5000 + b"]" * 5000, "nested"),
    (json.dumps({"StatusItems": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {
        "m": {"n": {"o": {"p": {"q": {"r": 1}}}}}}}}}}}}}}}}}}, "Errors": []}).encode(), "nested deeper"),
    (json.dumps({"StatusItems": {"app": {"managed": {"list": [{"name": "x"}]}}}, "Errors": []}).encode(),
     "identifier"),
    (json.dumps({"StatusItems": {"x": "y" * 300_000}, "Errors": []}).encode(), "larger than"),
]


def test_bad_status_reports_are_refused_and_nothing_is_stored(ddm_server):  # noqa: F811
    server = ddm_server
    sim = enroll(server)
    before = _reports(server)
    with server.session() as s:
        status_before = s.scalar(select(Device).where(Device.udid == sim.udid)).ddm_status
    for body, needle in BAD_STATUS:
        r = _raw_status(sim, body)
        assert r.status_code == 400, (needle, r.text)
        assert needle in r.json()["error"], (needle, r.text)
    assert _reports(server) == before
    with server.session() as s:
        assert s.scalar(select(Device).where(Device.udid == sim.udid)).ddm_status == status_before
    sim.close()


def test_bad_endpoints_and_foreign_reports(ddm_server):  # noqa: F811
    server = ddm_server
    sim, other = enroll(server), enroll(server)
    for endpoint, status in (("nonsense", 400), ("declaration/configuration/../../etc", 400),
                             ("declaration/widget/x", 400), ("declaration/configuration/vpcp.none", 404),
                             ("declaration/activation/vn.gov.ipadmdm.status-subscriptions", 404)):
        r = sim.ddm_request(endpoint)
        assert r.status_code == status, (endpoint, r.text)
        assert r.json()["error"]
    # Data that is not data, and a missing Endpoint.
    msg = {"MessageType": "DeclarativeManagement", "UDID": sim.udid, "Endpoint": "status", "Data": "text"}
    assert sim.checkin(msg).status_code == 400
    assert sim.checkin({"MessageType": "DeclarativeManagement", "UDID": sim.udid}).status_code == 400
    # A status report naming another iPad, signed by this one: refused, nothing stored.
    before = _reports(server)
    body = json.dumps(sim.status_report({"passcode.is-present": False}, full=False)).encode()
    r = sim.checkin({"MessageType": "DeclarativeManagement", "UDID": other.udid, "Endpoint": "status", "Data": body})
    assert r.status_code == 403
    assert _reports(server) == before
    # Unsigned.
    r = sim.checkin({"MessageType": "DeclarativeManagement", "UDID": sim.udid, "Endpoint": "tokens"}, sign=False)
    assert r.status_code == 401
    # A device that has not enrolled cannot reach DDM at all.
    plist = plistlib.dumps({"MessageType": "DeclarativeManagement", "UDID": sim.udid, "Endpoint": "tokens"})
    assert server.http().put("/mdm/checkin", content=plist).status_code == 401
    sim.close()
    other.close()


BAD_DECLARATIONS = [
    ({"type": "passcode.settings", "payload": {"MinimumLength": 40}}, "MinimumLength"),
    ({"type": "passcode.settings", "payload": {"RequirePasscode": "yes"}}, "RequirePasscode"),
    ({"type": "passcode.settings", "payload": {"ChangeAtNextAuth": True}}, "ChangeAtNextAuth"),
    ({"type": "softwareupdate.enforcement.specific", "payload": {"TargetOSVersion": "18.2"}}, "TargetLocalDateTime"),
    ({"type": "softwareupdate.enforcement.specific",
      "payload": {"TargetOSVersion": "18.2", "TargetLocalDateTime": "2026-02-30T10:00:00"}}, "TargetLocalDateTime"),
    ({"type": "softwareupdate.settings", "payload": {"RecommendedCadence": "Sometimes"}}, "RecommendedCadence"),
    ({"type": "security.certificate", "payload": {"CredentialAssetReference": "missing.asset"}},
     "CredentialAssetReference"),
    ({"type": "legacy", "payload": {}, "source": {"profile": "no.such.profile"}}, "source.profile"),
    ({"type": "asset.credential.certificate", "payload": {}, "source": {"certificate": "not a cert"}},
     "source.certificate"),
    ({"type": "widget.settings", "payload": {}}, "type"),
    ({"type": "passcode.settings", "payload": {}, "identifier": "vn.gov.ipadmdm.mine"}, "identifier"),
    ({"type": "passcode.settings", "payload": []}, "payload"),
]


def test_bad_declarations_are_400_naming_the_key(ddm_server):  # noqa: F811
    admin = api(ddm_server, "it_admin")
    for spec, key in BAD_DECLARATIONS:
        body = {"identifier": "vpcp.bad", "display_name": "Sai", **spec}
        r = admin.post("/api/v1/declarations", json=body)
        assert r.status_code == 400, (key, r.text)
        assert r.json().get("key", "").startswith(key), (key, r.json())
    assert admin.get("/api/v1/declarations/vpcp.bad").status_code == 404
    assert admin.post("/api/v1/declarations", content=b"not json",
                      headers={"Content-Type": "application/json"}).status_code == 400
    create(admin, PASSCODE)
    assert admin.post("/api/v1/declarations", json=dict(PASSCODE)).status_code == 409
    assert admin.put("/api/v1/declarations/vpcp.passcode", json={"payload": {"MinimumLength": "6"}}).status_code == 400
    assert admin.get("/api/v1/declarations/vpcp.passcode").json()["version"] == 1


def test_certificate_source_accepts_pem_and_der(ddm_server):  # noqa: F811
    server = ddm_server
    admin = api(server, "it_admin")
    der = server.instance.ca.certificate_der
    for ident, value in (("vpcp.pem", server.instance.ca.certificate_pem.decode()),
                         ("vpcp.der", base64.b64encode(der).decode())):
        r = admin.post("/api/v1/declarations", json={"identifier": ident, "type": "asset.credential.certificate",
                                                      "display_name": "CA", "payload": {},
                                                      "source": {"certificate": value}})
        assert r.status_code == 201, r.text
        pem = r.json()["source"]["certificate"]
        assert x509.load_pem_x509_certificate(pem.encode()).public_bytes(
            __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER) == der
