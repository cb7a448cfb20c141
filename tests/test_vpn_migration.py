"""Issue #19: VPN providers as data, what each iPad has installed, tunnels seen from the gateways'
own output, and a migration campaign of simulated iPads from OpenVPN to WireGuard with one device
failing and the campaign rolled back — never an iPad without a working VPN."""
from __future__ import annotations

import datetime as dt
import plistlib
import secrets

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ipad_mdm.crypto import cms
from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit
from mdm.models import Command, Device
from tests import apple_schema
from tests.sim_vpn import WIREGUARD, openvpn_status, wg_show_dump
from vpn import campaigns, sightings
from vpn.models import VpnCampaign, VpnCertificate, VpnInstallation, VpnProvider, WireGuardPeer
from vpn.ovpn import OvpnError, parse_ovpn

OPENVPN = "net.openvpn.connect.app"


# ------------------------------------------------------------------ a real client .ovpn

def _pem_ca() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OpenVPN CA Văn phòng")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _static_key() -> str:
    # The format `openvpn --genkey tls-crypt` writes: 2048 bits as 16 lines of 32 hex digits.
    body = "\n".join(secrets.token_hex(16) for _ in range(16))
    return f"#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n{body}\n-----END OpenVPN Static key V1-----"


TLS_CRYPT = _static_key()
OVPN = f"""# OpenVPN client config of the office (exported from the gateway)
client
dev tun
proto udp
remote vpn.vanphong.gov.vn 1194
remote vpn2.vanphong.gov.vn 1194
resolv-retry infinite
nobind
persist-key
persist-tun
remote-cert-tls server
cipher AES-256-GCM
auth SHA256
verb 3
<ca>
{_pem_ca().strip()}
</ca>
<tls-crypt>
{TLS_CRYPT}
</tls-crypt>
"""


def test_ovpn_becomes_vendor_config_with_its_keys_apart():
    cfg = parse_ovpn(OVPN)
    v = cfg.vendor_config
    assert v["remote"] == "vpn.vanphong.gov.vn 1194" and v["remote.2"] == "vpn2.vanphong.gov.vn 1194"
    assert v["client"] == "NOARGS" and v["nobind"] == "NOARGS" and v["cipher"] == "AES-256-GCM"
    assert v["ca"].startswith("-----BEGIN CERTIFICATE-----\\n") and "\n" not in v["ca"]
    assert "tls-crypt" not in v and cfg.secret_config["tls-crypt"].count("\\n") >= 16
    assert all(TLS_CRYPT.splitlines()[5] not in str(x) for x in v.values())
    with pytest.raises(OvpnError, match="line 2: 'ca' names a file"):
        parse_ovpn("client\nca ca.crt\nremote a 1194\n")
    with pytest.raises(OvpnError, match="no server"):
        parse_ovpn("client\n<ca>\nX\n</ca>\n")
    with pytest.raises(OvpnError, match="never closed"):
        parse_ovpn("remote a 1\n<ca>\nX\n")
    with pytest.raises(OvpnError, match="larger than"):
        parse_ovpn(b"#" * (300 * 1024))


def test_gateway_outputs_are_parsed_and_refused_when_garbled():
    dump = ("cHJpdmF0ZS1rZXktb2YtdGhlLWdhdGV3YXktbmV2ZXItcmVhZD0=\tc2VydmVyLXB1YmxpYy1rZXktZm9yLWR1bXAtdGVzdHMtMTI=\t51820\toff\n"
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\t(none)\t192.0.2.7:51820\t10.77.0.2/32\t1764800000\t92\t120\t25\n"
            "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=\t(none)\t(none)\t10.77.0.3/32\t0\t0\t0\toff\n")
    peers = sightings.parse_wg_dump(dump)
    assert [p.public_key[:4] for p in peers] == ["xTIB", "TrMv"]
    assert peers[0].latest == dt.datetime(2025, 12, 3, 22, 13, 20, tzinfo=dt.timezone.utc) and peers[1].latest is None
    assert peers[1].endpoint is None
    with_iface = "".join(f"wg0\t{line}\n" for line in dump.splitlines())
    assert [p.latest for p in sightings.parse_wg_dump(with_iface)] == [p.latest for p in peers]
    for bad in ("a\tb\tc\n", "x" * 44 + "\t1\t2\t3\t4\tsoon\t6\t7\t8\n"):
        with pytest.raises(sightings.DumpError):
            sightings.parse_wg_dump(bad)
    status = openvpn_status([], when=1764800000).replace("END", "CLIENT_LIST,abc.vpn.gov,1.2.3.4:5,10.8.0.2,,1,2,x,1764800100,UNDEF,1,1,AES\nEND")
    assert sightings.parse_openvpn_status(status) == {"abc.vpn.gov": dt.datetime(2025, 12, 3, 22, 15, tzinfo=dt.timezone.utc)}
    with pytest.raises(sightings.DumpError, match="HEADER"):
        sightings.parse_openvpn_status("CLIENT_LIST,a,b,c,d,e,f,g,h\n")


# ------------------------------------------------------------------ through the real server

def _api(server, role):
    return server.http(headers={"Authorization": f"Bearer {server.api_token(role, f'{role}-{secrets.token_hex(3)}')}"})


def _provider_body(**kw) -> dict:
    return {"key": "openvpn-office", "name": "OpenVPN văn phòng", "kind": "openvpn", "ovpn": OVPN,
            "auth": "device_certificate", "recognise": ["vn.gov.office.openvpn*"], **kw}


def _count(server, model) -> int:
    with server.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_provider_definition_profile_and_bad_input(server, tmp_path):
    server.instance.settings.extra["vpn_auto_provision"] = "false"
    officer, admin = _api(server, "security_officer"), _api(server, "it_admin")
    assert admin.post("/api/v1/vpn/providers", json=_provider_body()).status_code == 403  # officers define them
    r = officer.post("/api/v1/vpn/providers", json=_provider_body())
    assert r.status_code == 201, r.text
    shown = r.json()
    assert shown["vpn_subtype"] == OPENVPN and shown["secret_keys_held"] == ["tls-crypt"]
    listing = officer.get("/api/v1/vpn/providers").text + officer.get("/api/v1/vpn/providers/openvpn-office").text
    for text in (r.text, listing):
        assert "Static key" not in text and TLS_CRYPT.splitlines()[5] not in text and "PRIVATE KEY" not in text
    with server.session() as s:
        stored = s.scalar(select(VpnProvider))
        assert TLS_CRYPT.splitlines()[5] not in repr(stored.__dict__)  # sealed at rest too
    # Bad input: a clear 4xx naming the problem, nothing stored.
    bad = [
        (_provider_body(), 409, "provider_exists"),
        (_provider_body(key="app1", kind="vpn_app", ovpn=None, vpn_subtype="vn.gov.bcy.vpn",
                        vendor_config={"Server": "a", "Nested": {"x": 1}}), 400, "vendor_config_type"),
        (_provider_body(key="app2", kind="vpn_app", ovpn=None, vpn_subtype="vn.gov.bcy.vpn",
                        vendor_config={"Ratio": 1.5}), 400, "vendor_config_type"),
        (_provider_body(key="noauth", auth=None), 400, "no_authentication"),
        (_provider_body(key="imp", auth="imported_identity"), 400, "no_authentication"),
        (_provider_body(key="filed", ovpn="client\nremote a 1194\nca /etc/openvpn/ca.crt\n"), 400, "ovpn_invalid"),
        (_provider_body(key="wireguard"), 400, "invalid_provider"),
    ]
    for body, status, code in bad:
        r = officer.post("/api/v1/vpn/providers", json=body)
        assert (r.status_code, r.json().get("code")) == (status, code), (body.get("key"), r.text)
    assert officer.post("/api/v1/vpn/providers", content=b"{not json", headers={"Content-Type": "application/json"}
                        ).status_code == 400
    assert _count(server, VpnProvider) == 1
    r = officer.post("/api/v1/vpn/campaigns", json={"name": "x", "source": "openvpn-office", "target": "openvpn-office"})
    assert (r.status_code, r.json()["code"]) == (400, "same_provider")
    assert officer.post("/api/v1/vpn/campaigns", json={"name": "x", "source": "openvpn-office", "target": "nope"}
                        ).status_code == 400
    assert _count(server, VpnCampaign) == 0

    # The profile an iPad gets: signed by us, an identity from our CA, the .ovpn as VendorConfig.
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    sim.process_commands()
    r = admin.post(f"/api/v1/devices/{sim.udid}/vpn/install", json={"provider": "openvpn-office"})
    assert r.status_code == 202, r.text
    with server.session() as s:
        signed = plistlib.loads(s.scalar(select(Command.command_plist).where(Command.uuid == r.json()["command_uuid"])))
    verified = cms.verify(signed["Command"]["Payload"])
    verified.signer.verify_directly_issued_by(server.instance.ca.certificate)
    profile = plistlib.loads(verified.content)
    by_type = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    vpn_payload = by_type["com.apple.vpn.managed"]
    assert profile["PayloadIdentifier"].endswith(".vpn.p.openvpn-office")
    assert vpn_payload["VPNType"] == "VPN" and vpn_payload["VPNSubType"] == OPENVPN
    assert vpn_payload["VendorConfig"]["tls-crypt"].startswith("#\\n# 2048 bit")  # the secret reaches only the iPad
    assert vpn_payload["VPN"]["PayloadCertificateUUID"] == by_type["com.apple.security.pkcs12"]["PayloadUUID"]
    schema = apple_schema.load("mdm/profiles/com.apple.vpn.managed.yaml")["payloadkeys"]
    # VendorConfig is the app's own dictionary, and RemoteAddress of a VPNType "VPN" is read by iPadOS
    # although Apple's YAML lists it only under IPSec/IKEv2: both are checked by our payload rules.
    checked = {k: v for k, v in vpn_payload.items() if k not in ("VendorConfig",) and not k.startswith("Payload")}
    checked["VPN"] = {k: v for k, v in checked["VPN"].items() if k != "RemoteAddress"}
    assert apple_schema.problems(checked, schema) == []
    assert all(isinstance(v, str) for v in vpn_payload["VendorConfig"].values())
    sim.process_commands()
    assert [t["subtype"] for t in sim.vpn_tunnels()] == [OPENVPN]
    # A cut reaches a certificate provider too: the certificate goes on hold.
    cut = admin.post(f"/api/v1/devices/{sim.udid}/vpn/cut", json={"reason": "thử nghiệm"})
    assert cut.status_code == 200 and cut.json()["vpn"]["providers"][0]["state"] == "cut"
    with server.session() as s:
        assert s.scalar(select(VpnCertificate.state).where(VpnCertificate.provider_key == "openvpn-office")) == "cut"
    sim.close()


def _refresh_profiles(server, admin, sims):
    for sim in sims:
        assert admin.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "ProfileList"}).status_code == 201
        sim.process_commands()


def _providers_on(server, sim) -> set[str]:
    with server.session() as s:
        return set(s.scalars(select(VpnInstallation.provider_key).join(Device, Device.id == VpnInstallation.device_id)
                             .where(Device.udid == sim.udid)))


def _gateways_report(server, sims):
    with server.session() as s:
        sightings.record_wireguard(s, sightings.parse_wg_dump(wg_show_dump(sims)))
        sightings.record_common_names(s, "openvpn-office", sightings.parse_openvpn_status(openvpn_status(sims)))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_campaign_openvpn_to_wireguard_one_fails_then_rolled_back(server, tmp_path):
    server.instance.settings.extra["vpn_auto_provision"] = "false"
    with server.session() as s:
        s.add_all([Unit(code="TTTH", name_vi="Trung tâm Tin học", stage="pilot"),
                   Unit(code="VHC", name_vi="Vụ Hành chính", stage="general")])
    officer, admin = _api(server, "security_officer"), _api(server, "it_admin")
    assert officer.post("/api/v1/vpn/providers", json=_provider_body(
        verification={"kind": "openvpn_status", "path": str(tmp_path / "openvpn-status.log")})).status_code == 201
    sims = []
    for unit in ("TTTH", "TTTH", "VHC", "VHC"):
        sim = server.simulator()
        sim.enroll(server.enrollment_url(unit_code=unit))
        sim.process_commands()
        assert admin.post(f"/api/v1/devices/{sim.udid}/vpn/install", json={"provider": "openvpn-office"}).status_code == 202
        sim.process_commands()
        sims.append(sim)
    # A VPN installed by hand before this server existed is recognised by the provider's pattern.
    foreign = {"PayloadIdentifier": "vn.gov.office.openvpn.manual", "PayloadUUID": "0D4C5C36-1E61-4C1B-8D0E-7E0A2B44F00D",
               "PayloadContent": [{"PayloadType": "com.apple.vpn.managed", "PayloadIdentifier": "x.vpn",
                                   "PayloadUUID": "8B0C3C8F-5E2B-4C8A-9E1A-3B9E6F1A2C4D", "VPNSubType": OPENVPN}]}
    sims[3].state.installed_profiles["vn.gov.office.openvpn.manual"] = foreign
    _refresh_profiles(server, admin, sims)
    _gateways_report(server, sims)
    assert all(_providers_on(server, sim) == {"openvpn-office"} for sim in sims)
    with server.session() as s:
        mine = {r.profile_identifier: r.managed_by_us for r in s.scalars(select(VpnInstallation).join(
            Device, Device.id == VpnInstallation.device_id).where(Device.udid == sims[3].udid))}
    assert mine == {f"{server.instance.settings.org_identifier}.vpn.p.openvpn-office": True,
                    "vn.gov.office.openvpn.manual": False}
    sims[3].state.installed_profiles.pop("vn.gov.office.openvpn.manual")
    _refresh_profiles(server, admin, sims[3:])
    assert admin.get("/api/v1/vpn/installed").json()["devices_by_provider"] == {"openvpn-office": 4}

    # The pilot: the first TTTH iPad's WireGuard tunnel never comes up.
    sims[1].state.vpn_broken = {WIREGUARD}
    r = admin.post("/api/v1/vpn/campaigns", json={"name": "OpenVPN → WireGuard 2026", "source": "openvpn-office",
                                                  "target": "wireguard", "verify_hours": 2})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["steps"] == {"installing": 2, "pending": 2}  # pilot units only
    assert admin.post("/api/v1/vpn/campaigns", json={"name": "again", "source": "openvpn-office",
                                                     "target": "wireguard"}).status_code == 409
    for sim in sims:
        sim.process_commands()
        assert sim.vpn_tunnels(), "an iPad was left without a working VPN"
    assert {t["subtype"] for t in sims[0].vpn_tunnels()} == {OPENVPN, WIREGUARD}  # B beside A, not instead
    _gateways_report(server, sims)
    status = admin.post(f"/api/v1/vpn/campaigns/{cid}/advance").json()
    assert status["steps"] == {"removing_source": 1, "verifying": 1, "pending": 2}
    for sim in sims:
        sim.process_commands()
        assert sim.vpn_tunnels()
    assert [t["subtype"] for t in sims[0].vpn_tunnels()] == [WIREGUARD]
    # Time passes; the broken iPad's tunnel was never seen: it fails, keeps OpenVPN, loses WireGuard.
    with server.session() as s:
        campaigns.advance(s, server.instance, s.get(VpnCampaign, cid), now=utcnow() + dt.timedelta(hours=3))
    sims[1].process_commands()
    assert [t["subtype"] for t in sims[1].vpn_tunnels()] == [OPENVPN]
    assert not any(p.endswith(".vpn") for p in sims[1].state.installed_profiles)
    status = admin.get(f"/api/v1/vpn/campaigns/{cid}").json()
    assert status["steps"] == {"done": 1, "failed": 1, "pending": 2}
    assert status["failed"] == [{"udid": sims[1].udid, "serial_number": sims[1].serial, "reason": "tunnel_not_seen",
                                 "step_at": status["failed"][0]["step_at"]}]
    assert status["units"]["TTTH"] == {"done": 1, "failed": 1}

    # Paused, nothing moves; widened to every unit, the rest go over.
    assert admin.post(f"/api/v1/vpn/campaigns/{cid}/pause").json()["state"] == "paused"
    assert admin.post(f"/api/v1/vpn/campaigns/{cid}/advance").json()["pass"]["started"] == 0
    assert admin.post(f"/api/v1/vpn/campaigns/{cid}/resume").json()["state"] == "running"
    assert admin.post(f"/api/v1/vpn/campaigns/{cid}/widen").json()["steps"]["installing"] == 2
    for sim in sims:
        sim.process_commands()
    _gateways_report(server, sims)
    admin.post(f"/api/v1/vpn/campaigns/{cid}/advance")
    for sim in sims:
        sim.process_commands()
        assert sim.vpn_tunnels()
    status = admin.get(f"/api/v1/vpn/campaigns/{cid}").json()
    assert status["state"] == "done" and status["steps"] == {"done": 3, "failed": 1}, status
    _refresh_profiles(server, admin, sims)
    assert [_providers_on(server, sim) for sim in sims] == [{"wireguard"}, {"openvpn-office"}, {"wireguard"}, {"wireguard"}]
    [row] = admin.get(f"/api/v1/devices/{sims[0].udid}/vpn/installed").json()["installed"]
    assert (row["provider"], row["managed_by_us"], row["app_version"]) == ("wireguard", True, "1.0.16")

    # The monthly report: VPNs per unit, who is still on OpenVPN, the campaign per unit, tunnels seen.
    from reports.month import compute_month
    from reports.periods import Month

    with server.instance.database.engine.connect() as conn:
        fig = compute_month(conn, Month.containing(utcnow()), as_of=utcnow())
    installed = fig.tables["vpn_installed"]
    assert sorted(zip(installed["unit_code"], installed["provider"], installed["devices"])) == [
        ("TTTH", "OpenVPN văn phòng", 1), ("TTTH", "WireGuard", 1), ("VHC", "WireGuard", 2)]
    assert list(fig.tables["vpn_still_openvpn"]["serial_number"]) == [sims[1].serial]
    progress = fig.tables["vpn_campaign_progress"].set_index("unit_code")
    assert (progress.at["TTTH", "done"], progress.at["TTTH", "failed"], progress.at["VHC", "done"]) == (1, 1, 2)
    assert fig.kpis["vpn_devices_with_vpn"] == 4 and fig.kpis["vpn_devices_openvpn"] == 1
    assert fig.kpis["vpn_tunnel_seen"] == 4 and fig.kpis["vpn_tunnel_seen_rate"] == 1.0

    # Rolled back: OpenVPN comes back first, then WireGuard goes; the failed iPad is left as it is.
    r = officer.post(f"/api/v1/vpn/campaigns/{cid}/rollback")
    assert r.status_code == 200 and r.json()["pass"] == {"reinstalling_source": 3, "removing_target": 0,
                                                         "untouched": 1, "source_not_rebuildable": 0}
    for sim in sims:
        sim.process_commands()
        assert sim.vpn_tunnels()
    status = admin.get(f"/api/v1/vpn/campaigns/{cid}").json()
    assert status["state"] == "rolled_back" and status["steps"] == {"rolled_back": 4}
    assert all([t["subtype"] for t in sim.vpn_tunnels()] == [OPENVPN] for sim in sims)
    with server.session() as s:
        assert set(s.scalars(select(WireGuardPeer.state))) == {"removed"}
    assert officer.post(f"/api/v1/vpn/campaigns/{cid}/rollback").status_code == 409
    assert officer.post("/api/v1/vpn/campaigns/999999/pause").status_code == 404
    for sim in sims:
        sim.close()


# ------------------------------------------------------------------ compliance: which VPN, and is it up

def test_vpn_rules_pure():
    from compliance.checks import evaluate_rules
    from compliance.rules import DeviceFacts, merge_rules, validate_rules

    now = dt.datetime(2026, 12, 4, 3, 0, tzinfo=dt.timezone.utc)
    rules = merge_rules([({"policy_id": 1, "version": 1}, validate_rules([
        {"kind": "vpn_provider_in", "providers": ["wireguard", "openvpn-office"]},
        {"kind": "vpn_seen_within_hours", "hours": 24}])),
        ({"policy_id": 2, "version": 1}, validate_rules([{"kind": "vpn_provider_in", "providers": ["wireguard"]},
                                                        {"kind": "vpn_seen_within_hours", "hours": 12}]))])
    assert [r.params for r in rules] == [{"providers": ["wireguard"]}, {"hours": 12}]  # strictest of both

    def run(providers, seen):
        facts = DeviceFacts(os_version="18.1", security_info={}, device_information={}, is_supervised=True,
                            profile_list=[], installed_applications=[], lost_mode_enabled=False, last_seen_at=now,
                            identity=None, vpn={"providers": set(providers), "seen": seen})
        out = evaluate_rules(rules, facts, now)
        return [f.kind for f in out.failures], [f.reason_vi for f in out.failures]

    assert run(["wireguard"], {"wireguard": now - dt.timedelta(hours=1)}) == ([], [])
    kinds, reasons = run(["wireguard", "openvpn-office"], {"wireguard": now - dt.timedelta(hours=13)})
    assert kinds == ["vpn_provider_in", "vpn_seen_within_hours"]
    assert "openvpn-office" in reasons[0] and "quá 12 giờ" in reasons[1]
    assert run([], {})[0] == ["vpn_provider_in", "vpn_seen_within_hours"]
    with pytest.raises(Exception, match="VPN provider key"):
        validate_rules([{"kind": "vpn_provider_in", "providers": ["Not A Key"]}])


def test_vpn_rules_through_the_server(server):
    server.instance.settings.extra["vpn_auto_provision"] = "false"
    officer, admin = _api(server, "security_officer"), _api(server, "it_admin")
    assert officer.post("/api/v1/vpn/providers", json=_provider_body()).status_code == 201
    r = officer.post("/api/v1/policies", json={
        "name": "VPN văn phòng", "rules": [{"kind": "vpn_provider_in", "providers": ["openvpn-office"]},
                                            {"kind": "vpn_seen_within_hours", "hours": 24}],
        "actions": ["notify"], "grace_hours": 0, "assign": {"all": True}})
    assert r.status_code == 201, r.text
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    sim.process_commands()
    verdict = admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()
    assert verdict["state"] == "non_compliant" and {f["rule"] for f in verdict["failing_rules"]} == {
        "vpn_provider_in", "vpn_seen_within_hours"}
    admin.post(f"/api/v1/devices/{sim.udid}/vpn/install", json={"provider": "openvpn-office"})
    sim.process_commands()
    _refresh_profiles(server, admin, [sim])  # installed, but its tunnel not yet seen
    verdict = admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()
    assert [f["rule"] for f in verdict["failing_rules"]] == ["vpn_seen_within_hours"]
    _gateways_report(server, [sim])
    _refresh_profiles(server, admin, [sim])
    assert admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()["state"] == "compliant"
    sim.close()


def test_readme_vpn_migration_block_runs_as_written(server, tmp_path):
    """The README's VPN block, line by line through the real CLI, on the server's own instance."""
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    block = re.search(r"<!-- cli-vpn-migration -->\n```sh\n(.*?)\n```", (root / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README lost its VPN migration block"
    server.instance.settings.extra["vpn_auto_provision"] = "false"
    with server.session() as s:
        s.add(Unit(code="TTTH", name_vi="Trung tâm Tin học", stage="pilot"))
    (tmp_path / "office.ovpn").write_text(OVPN, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAD_MDM_") and k != "DATABASE_URL"}
    env.update(IPAD_MDM_INSTANCE=str(server.instance.settings.instance_dir), IPAD_MDM_VPN_AUTO_PROVISION="false",
               DATABASE_URL=server.instance.settings.database_url)
    admin = _api(server, "it_admin")
    sim = server.simulator()
    sim.enroll(server.enrollment_url(unit_code="TTTH"))
    sim.process_commands()
    bin_dir = str(Path(sys.executable).parent) + "/"
    for line in [x for x in block.group(1).splitlines() if x.strip()]:
        if "vpn tunnels" in line:
            (tmp_path / "wg0.dump").write_text(wg_show_dump([sim]))
        proc = subprocess.run(["bash", "-c", line.replace(".venv/bin/", bin_dir)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (line, proc.stdout, proc.stderr)
        out = json.loads(proc.stdout)
        if "provider add" in line:
            assert out["secret_keys_held"] == ["tls-crypt"] and "Static key" not in proc.stdout
            assert admin.post(f"/api/v1/devices/{sim.udid}/vpn/install", json={"provider": "openvpn-office"}
                              ).status_code == 202
            sim.process_commands()
            _refresh_profiles(server, admin, [sim])
        elif "provider list" in line:
            assert [p["key"] for p in out] == ["wireguard", "ikev2", "openvpn-office"]
        elif "campaign create" in line:
            assert out["steps"] == {"installing": 1}
            sim.process_commands()
        elif "vpn tunnels" in line:
            assert out == {"recorded": {"wireguard": 1}}
        elif line.split("#")[0].strip().endswith("advance"):
            assert out["steps"] == {"removing_source": 1}
            sim.process_commands()
            assert [t["subtype"] for t in sim.vpn_tunnels()] == [WIREGUARD]
        elif "campaign status" in line:
            assert out["steps"] == {"done": 1} and out["units"] == {"TTTH": {"done": 1}}
        elif "widen" in line:
            assert out["stage"] == "all" and out["state"] == "done"
        elif "rollback" in line:
            assert out["state"] == "rolling_back"
            sim.process_commands()
            assert [t["subtype"] for t in sim.vpn_tunnels()] == [OPENVPN]
    sim.close()


def test_console_campaign_actions_by_role(server):
    from tests.test_console_support import client_for, seed

    seed(server)
    auditor, security, admin = client_for(server, "auditor"), client_for(server, "security"), client_for(server, "admin")
    # The provider form: an officer uploads the .ovpn; refusals are said in Vietnamese, nothing stored.
    fields = {"key": "openvpn-office", "name": "OpenVPN văn phòng", "kind": "openvpn", "auth": "device_certificate",
              "recognise": "vn.gov.office.openvpn*", "verification": "none"}
    r = security.post("/console/vpn/providers", fields, files={"ovpn": ("office.ovpn", b"client\nca ca.crt\nremote a 1194\n")})
    assert r.status_code == 400 and "trỏ tới một tệp" in r.text and "names a file" not in r.text
    assert admin.post("/console/vpn/providers", fields, files={"ovpn": ("office.ovpn", OVPN.encode())}).status_code == 403
    r = security.post("/console/vpn/providers", fields, files={"ovpn": ("office.ovpn", OVPN.encode())}, follow_redirects=True)
    assert r.status_code == 200 and "Đã thêm nhà cung cấp VPN “OpenVPN văn phòng”." in r.text
    assert TLS_CRYPT.splitlines()[5] not in r.text
    with server.session() as s:
        assert s.scalar(select(VpnProvider.secret_keys)) == ["tls-crypt"]
    # The campaign form (IT staff too).
    r = admin.post("/console/vpn/campaigns", {"name": "Thử", "source": "wireguard", "target": "wireguard"})
    assert r.status_code == 400 and "VPN mới trùng với VPN cũ" in r.text
    r = admin.post("/console/vpn/campaigns", {"name": "OpenVPN → WireGuard", "source": "openvpn-office",
                                              "target": "wireguard", "verify_hours": "24"}, follow_redirects=True)
    assert r.status_code == 200 and "Đã bắt đầu đợt chuyển đổi" in r.text
    with server.session() as s:
        cid = s.scalar(select(VpnCampaign.id))
    page = auditor.get("/console/vpn")
    assert page.status_code == 200 and "OpenVPN văn phòng → WireGuard" in page.text and "Tạm dừng</button>" not in page.text
    assert auditor.post(f"/console/vpn/campaigns/{cid}/pause").status_code == 403
    assert security.post(f"/console/vpn/campaigns/{cid}/fly").status_code == 404
    r = security.post(f"/console/vpn/campaigns/{cid}/pause", follow_redirects=True)
    assert r.status_code == 200 and "Đã tạm dừng đợt chuyển đổi." in r.text and "Tạm dừng" in r.text
    with server.session() as s:
        assert s.get(VpnCampaign, cid).state == "paused"
    r = security.post(f"/console/vpn/campaigns/{cid}/pause", follow_redirects=True)  # already paused: said, not a 500
    assert r.status_code == 200 and "đã đổi trạng thái" in r.text
    security.post(f"/console/vpn/campaigns/{cid}/rollback")
    with server.session() as s:
        assert s.get(VpnCampaign, cid).state == "rolled_back"  # no iPad was on its way
    auditor.close()
    security.close()
    admin.close()


def test_per_app_vpn_for_the_document_app(server):
    """A VPN app provider limited to the document app: a per-app VPN payload (VPNUUID) and the app's
    attributes pointing at it, so only the document app's traffic goes through it."""
    server.instance.settings.extra["vpn_auto_provision"] = "false"
    officer, admin = _api(server, "security_officer"), _api(server, "it_admin")
    r = officer.post("/api/v1/vpn/providers", json={
        "key": "vpn-cy", "name": "VPN Ban Cơ yếu", "kind": "vpn_app", "vpn_subtype": "vn.gov.bcy.vpn",
        "provider_bundle_id": "vn.gov.bcy.vpn.tunnel", "provider_type": "packet-tunnel",
        "vendor_config": {"Server": "vpn.bcy.gov.vn", "Port": 443, "PinnedKey": "c2VjcmV0LXBpbg=="},
        "secret_keys": ["PinnedKey"], "auth": "device_certificate", "per_app_bundle_ids": ["vn.gov.vpcp.vanban"]})
    assert r.status_code == 201, r.text
    assert r.json()["secret_keys_held"] == ["PinnedKey"] and "c2VjcmV0LXBpbg" not in r.text
    vpn_uuid = r.json()["vpn_uuid"]
    bad = officer.post("/api/v1/vpn/providers", json={**_provider_body(key="x2"), "per_app_bundle_ids": ["not a bundle"]})
    assert bad.status_code == 400
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    sim.process_commands()
    assert admin.post(f"/api/v1/devices/{sim.udid}/vpn/install", json={"provider": "vpn-cy"}).status_code == 202
    handled = sim.process_commands()
    assert [c["Command"]["RequestType"] for c in handled] == ["InstallProfile", "Settings"]
    profile = plistlib.loads(cms.verify(handled[0]["Command"]["Payload"]).content)
    payload = next(p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.vpn.managed.applayer")
    assert payload["VPNUUID"] == vpn_uuid and payload["VendorConfig"]["PinnedKey"] == "c2VjcmV0LXBpbg=="
    assert payload["VPN"]["ProviderBundleIdentifier"] == "vn.gov.bcy.vpn.tunnel"
    # Apple's applayer schema lists the keys it adds; the VPN keys are those of com.apple.vpn.managed.
    schema = (apple_schema.load("mdm/profiles/com.apple.vpn.managed.applayer.yaml")["payloadkeys"]
              + apple_schema.load("mdm/profiles/com.apple.vpn.managed.yaml")["payloadkeys"])
    checked = {k: v for k, v in payload.items() if k != "VendorConfig" and not k.startswith("Payload")}
    assert apple_schema.problems(checked, schema) == []
    assert sim.state.app_attributes == {"vn.gov.vpcp.vanban": {"VPNUUID": vpn_uuid}}
    assert [t.get("apps") for t in sim.vpn_tunnels()] == [["vn.gov.vpcp.vanban"]]
    _refresh_profiles(server, admin, [sim])
    assert _providers_on(server, sim) == {"vpn-cy"}
    sim.close()


def test_verification_hook_reads_an_operator_log(server, tmp_path):
    """A provider whose server is neither WireGuard nor OpenVPN: the operator's pattern over its own log
    (here a RADIUS accounting export) says when each iPad's tunnel was up; the periodic job reads it."""
    from vpn import sightings as vpn_sightings

    server.instance.settings.extra["vpn_auto_provision"] = "false"
    officer, admin = _api(server, "security_officer"), _api(server, "it_admin")
    log_file = tmp_path / "radius-acct.log"
    body = {"key": "vpn-cy", "name": "VPN Ban Cơ yếu", "kind": "vpn_app", "vpn_subtype": "vn.gov.bcy.vpn",
            "vendor_config": {"Server": "vpn.bcy.gov.vn"}, "auth": "device_certificate",
            "verification": {"kind": "log_pattern", "path": str(log_file),
                             "pattern": r'^(?P<iso>\S+) Acct-Status-Type = Start User-Name = "(?P<cn>[^"]+)"'}}
    for broken, code in (("(?P<cn>x)", "verification_invalid"), ("([", "verification_invalid")):
        r = officer.post("/api/v1/vpn/providers", json={**body, "verification": {**body["verification"], "pattern": broken}})
        assert (r.status_code, r.json()["code"]) == (400, code)
    assert officer.post("/api/v1/vpn/providers", json=body).status_code == 201
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    sim.process_commands()
    admin.post(f"/api/v1/devices/{sim.udid}/vpn/install", json={"provider": "vpn-cy"})
    sim.process_commands()
    [tunnel] = sim.vpn_tunnels()
    log_file.write_text("2026-12-04T01:00:00Z Acct-Status-Type = Start User-Name = \"someone.else\"\n"
                        f"2026-12-04T02:30:00Z Acct-Status-Type = Start User-Name = \"{tunnel['common_name']}\"\n"
                        "garbage line\n")
    with server.session() as s:
        assert vpn_sightings.read_all(s, server.instance) == {"vpn-cy": 1}
    with server.session() as s:
        device_id = s.scalar(select(Device.id).where(Device.udid == sim.udid))
        assert vpn_sightings.last_seen(s, device_id, "vpn-cy") == dt.datetime(2026, 12, 4, 2, 30, tzinfo=dt.timezone.utc)
    sim.close()
