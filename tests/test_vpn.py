"""VPN (issue #3) through the real server: signed profiles, gateway config, cut/restore, pool, IKEv2."""
from __future__ import annotations

import base64
import ipaddress
import logging
import os
import plistlib
import stat
import subprocess
import threading
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from sqlalchemy import select, text

from mdm.models import Command, Device

import vpn
from vpn import keys as vpn_keys
from vpn.models import VpnApply, VpnCertificate, VpnEvent, WireGuardPeer
from vpn.serverconf import peers_in_config_text, render_server_config
from vpn.settings import vpn_settings


# ------------------------------------------------------------------ helpers

def wg_pubkey(private: str) -> str:
    return subprocess.run(["wg", "pubkey"], input=private + "\n", capture_output=True, text=True, check=True).stdout.strip()


def wg_quick_strip(path) -> str:
    proc = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def config_path(server):
    return vpn_settings(server.instance).config_path


def config_peers(server) -> dict:
    """Peers of the gateway config as `wg-quick strip` leaves them (what `wg` would load),
    once the background rewrite requested by the last committed change has run."""
    server.dispatcher.wait_idle(timeout=30)
    return peers_in_config_text(wg_quick_strip(config_path(server)))


def openssl_verify_profile(server, signed: bytes, tmp_path) -> bytes:
    src, out = tmp_path / f"p-{uuid.uuid4().hex}.der", tmp_path / f"c-{uuid.uuid4().hex}.plist"
    src.write_bytes(signed)
    proc = subprocess.run(["openssl", "cms", "-verify", "-CAfile", server.ca_path, "-inform", "DER",
                           "-in", str(src), "-out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


def make_device(server, udid: str | None = None, **kw) -> str:
    udid = udid or str(uuid.uuid4()).upper()
    with server.session() as s:
        s.add(Device(udid=udid, enrollment_state="enrolled", **kw))
    return udid


def provision(server, udid, **kw) -> dict:
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == udid))
        return vpn.provision_peer(s, server.instance, device, **kw)


def peer_row(server, udid) -> WireGuardPeer:
    with server.session() as s:
        return s.scalar(select(WireGuardPeer).join(Device, Device.id == WireGuardPeer.device_id).where(Device.udid == udid))


def secrets_of(server, udid) -> tuple[str, str]:
    peer = peer_row(server, udid)
    f = server.instance.fernet()
    return f.decrypt(peer.private_key_enc.encode()).decode(), f.decrypt(peer.preshared_key_enc.encode()).decode()


def emit(server, event, udid, **kw):
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == udid))
        server.hooks.emit(event, session=s, device=device, **kw)


def vpn_policy(server, *, cut: bool = True) -> None:
    """The policy compliance judges by (instead of the baseline): no passcode -> non-compliant at once."""
    from tests.conftest import retire_baseline_policy

    officer = server.http(headers={"Authorization": f"Bearer {server.api_token('security_officer')}"})
    retire_baseline_policy(officer)
    r = officer.post("/api/v1/policies", json={"name": f"VPN {cut}", "rules": [{"kind": "passcode_present"}],
                                               "grace_hours": 0, "assign": {"all": True},
                                               "actions": ["cut_vpn"] if cut else ["notify"]})
    assert r.status_code == 201, r.text
    officer.close()


def judge(server, sim, *, passcode: bool) -> str:
    """The iPad reports its passcode state (SecurityInfo over HTTPS); the real compliance engine
    judges it, in the same transaction, and returns the verdict state."""
    sim.state.passcode_present = passcode
    with server.http(headers={"Authorization": f"Bearer {server.api_token('it_admin')}"}) as admin:
        assert admin.post(f"/api/v1/devices/{sim.udid}/commands", json={"request_type": "SecurityInfo"}).status_code == 201
        sim.process_commands()
        return admin.get(f"/api/v1/devices/{sim.udid}/verdict").json()["state"]


def install_commands(sim) -> list[dict]:
    return [c for c in sim.handled if c["Command"]["RequestType"] == "InstallProfile"]


# ------------------------------------------------------------------ keys

def test_keys_match_wg_pubkey_and_server_key_is_0600(server):
    for _ in range(5):
        private, public = vpn_keys.generate_keypair()
        assert len(base64.b64decode(private)) == 32
        assert wg_pubkey(private) == public
    secrets_dir = server.instance.settings.secrets_dir
    server_private = vpn_keys.server_private_key(secrets_dir)
    assert wg_pubkey(server_private) == vpn_keys.server_public_key(secrets_dir)
    assert stat.S_IMODE(os.stat(secrets_dir / vpn_keys.SERVER_KEY_FILE).st_mode) == 0o600


# ------------------------------------------------------------------ enrollment -> signed profile

def test_enrolled_device_gets_signed_wireguard_profile(server, enrolled, tmp_path):
    commands = install_commands(enrolled)
    assert len(commands) == 1
    content = openssl_verify_profile(server, commands[0]["Command"]["Payload"], tmp_path)
    profile = plistlib.loads(content)
    assert profile["PayloadIdentifier"] == f"{server.instance.settings.org_identifier}.vpn"
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.vpn.managed"
    assert payload["VPNType"] == "VPN" and payload["VPNSubType"] == "com.wireguard.ios"
    wg = peers_in_config_text(payload["VendorConfig"]["WgQuickConfig"])
    # The simulator installed it.
    assert enrolled.state.installed_profiles[profile["PayloadIdentifier"]]["PayloadUUID"] == profile["PayloadUUID"]

    from wgconfig import WGConfig
    import io

    client = WGConfig()
    client.read_from_fileobj(io.StringIO(payload["VendorConfig"]["WgQuickConfig"]))
    iface = client.get_interface()
    peer = peer_row(server, enrolled.udid)
    # Device key in the profile <-> public key on the gateway, checked with wg itself.
    assert wg_pubkey(iface["PrivateKey"]) == peer.public_key
    assert iface["Address"] == f"{peer.address_v4}/32"
    assert ipaddress.IPv4Address(peer.address_v4) in ipaddress.ip_network("10.77.0.0/16")
    (server_pub,) = wg
    assert server_pub == vpn_keys.server_public_key(server.instance.settings.secrets_dir)
    assert wg[server_pub]["Endpoint"] == "127.0.0.1:51820"
    assert wg[server_pub]["PersistentKeepalive"] == 25
    assert wg[server_pub]["AllowedIPs"] == "10.77.0.0/16"
    gateway = config_peers(server)
    assert gateway[peer.public_key]["AllowedIPs"] == f"{peer.address_v4}/32"
    assert gateway[peer.public_key]["PresharedKey"] == wg[server_pub]["PresharedKey"]

    # The device detail and the VPN API show the peer (no private key).
    http = server.http(headers={"Authorization": f"Bearer {server.api_token('auditor')}"})
    detail = http.get(f"/api/v1/devices/{enrolled.udid}").json()
    assert detail["vpn"]["state"] == "active"
    assert detail["vpn"]["address"] == peer.address_v4
    assert detail["vpn"]["public_key"] == peer.public_key
    listing = http.get("/api/v1/vpn/peers").json()
    assert [p["udid"] for p in listing["peers"]] == [enrolled.udid]
    assert listing["last_apply"]["ok"] is True and listing["last_apply"]["active_peers"] == 1


def test_server_config_is_valid_for_wg_quick_and_holds_only_active_peers(server, enrolled):
    udids = [make_device(server) for _ in range(3)]
    for udid in udids:
        provision(server, udid, send_profile=False)
    path = config_path(server)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    stripped = wg_quick_strip(path)
    assert "Address" not in stripped  # wg-quick-only keys gone: what `wg syncconf` gets
    active = {peer_row(server, u).public_key for u in udids + [enrolled.udid]}
    assert set(peers_in_config_text(stripped)) == active
    # No device private key in the gateway config, only public keys + PSKs.
    conf = path.read_text()
    for udid in udids + [enrolled.udid]:
        private, _psk = secrets_of(server, udid)
        assert private not in conf
    # Regeneration is idempotent: same DB state, same bytes, nothing re-applied.
    before = path.read_bytes()
    result = vpn.sync_server_config(server.instance)
    assert result.changed is False and path.read_bytes() == before


# ------------------------------------------------------------------ secrets

def test_private_keys_never_leak_to_logs_api_or_repr(server, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    private, psk = secrets_of(server, sim.udid)
    server_private = vpn_keys.server_private_key(server.instance.settings.secrets_dir)

    admin = server.http(headers={"Authorization": f"Bearer {server.api_token('it_admin')}"})
    bodies = [
        admin.get("/api/v1/vpn/peers").text,
        admin.get(f"/api/v1/devices/{sim.udid}").text,
        admin.get(f"/api/v1/devices/{sim.udid}/vpn").text,
        admin.get(f"/api/v1/devices/{sim.udid}/commands").text,
        admin.post(f"/api/v1/devices/{sim.udid}/vpn/cut", json={"reason": "lost"}).text,
        admin.post(f"/api/v1/devices/{sim.udid}/vpn/restore", json={"reason": "found"}).text,
    ]
    peer = peer_row(server, sim.udid)
    haystacks = bodies + [caplog.text, repr(peer), str(peer)]
    for secret in (private, psk, server_private):
        for hay in haystacks:
            assert secret not in hay
    # The gateway file has the PSK (it must) and the server key, never a device key.
    assert private not in config_path(server).read_text()
    sim.close()


def test_keys_are_encrypted_at_rest(server, enrolled):
    private, psk = secrets_of(server, enrolled.udid)
    with server.instance.database.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM vpn_wireguard_peers")).all()
    raw_db = repr(rows)
    for secret in (private, psk):
        assert secret not in raw_db
        assert base64.b64decode(secret).hex() not in raw_db
    assert rows[0]._mapping["private_key_enc"].startswith("gAAAAA")  # a Fernet token


# ------------------------------------------------------------------ compliance

def test_verdict_changes_cut_and_restore_the_peer(server, enrolled):
    public = peer_row(server, enrolled.udid).public_key
    assert public in config_peers(server)

    # A policy without the cut_vpn action leaves the peer alone.
    vpn_policy(server, cut=False)
    assert judge(server, enrolled, passcode=False) == "non_compliant"
    assert public in config_peers(server)
    assert judge(server, enrolled, passcode=True) == "compliant"

    vpn_policy(server, cut=True)
    assert judge(server, enrolled, passcode=False) == "non_compliant"
    assert public not in config_peers(server)  # cut at once, after commit
    assert peer_row(server, enrolled.udid).state == "cut"

    assert judge(server, enrolled, passcode=True) == "compliant"
    assert public in config_peers(server)
    assert peer_row(server, enrolled.udid).state == "active"

    assert judge(server, enrolled, passcode=False) == "non_compliant"
    assert public not in config_peers(server)
    # A manual cut on top of a compliance cut is not undone by compliance.
    admin = server.http(headers={"Authorization": f"Bearer {server.api_token('it_admin')}"})
    assert admin.post(f"/api/v1/devices/{enrolled.udid}/vpn/cut", json={"reason": "investigation"}).status_code == 200
    assert judge(server, enrolled, passcode=True) == "compliant"
    assert public not in config_peers(server)
    assert admin.post(f"/api/v1/devices/{enrolled.udid}/vpn/restore", json={}).status_code == 200
    assert public in config_peers(server)

    # A rolled-back transaction never reaches the gateway: the engine cuts, then the transaction fails.
    import compliance

    enrolled.state.passcode_present = False
    admin.post(f"/api/v1/devices/{enrolled.udid}/commands", json={"request_type": "SecurityInfo"})
    with pytest.raises(RuntimeError):
        with server.instance.database.session(dispatcher=server.dispatcher) as s:
            device = s.scalar(select(Device).where(Device.udid == enrolled.udid))
            device.security_info = {**(device.security_info or {}), "PasscodePresent": False}
            assert compliance.evaluate_device(s, server.hooks, device).state == "non_compliant"
            raise RuntimeError("rollback")
    assert public in config_peers(server)
    assert peer_row(server, enrolled.udid).state == "active"
    enrolled.process_commands()  # the real answer: now it is cut
    assert public not in config_peers(server)

    import datetime as dt

    with server.session() as s:
        now = dt.datetime.now(dt.timezone.utc)
        counts = vpn.event_counts(s, now - dt.timedelta(days=31), now + dt.timedelta(minutes=1))
    assert counts["cut"] == 3 and counts["restored"] == 2 and counts["created"] == 1


def test_cut_and_restore_api_permissions_and_errors(server, enrolled):
    auditor = server.http(headers={"Authorization": f"Bearer {server.api_token('auditor')}"})
    assert auditor.get(f"/api/v1/devices/{enrolled.udid}/vpn").status_code == 200
    assert auditor.post(f"/api/v1/devices/{enrolled.udid}/vpn/cut").status_code == 403
    assert server.http().get("/api/v1/vpn/peers").status_code == 401
    admin = server.http(headers={"Authorization": f"Bearer {server.api_token('it_admin')}"})
    assert admin.post("/api/v1/devices/NOPE/vpn/cut").status_code == 404
    assert admin.post(f"/api/v1/devices/{enrolled.udid}/vpn/cut", json={"reason": 5}).status_code == 400
    lone = make_device(server)
    assert admin.post(f"/api/v1/devices/{lone}/vpn/cut").status_code == 404  # no VPN access
    r = admin.post(f"/api/v1/devices/{enrolled.udid}/vpn/cut")
    assert r.status_code == 200 and r.json()["vpn"]["state"] == "cut"
    events = admin.get(f"/api/v1/devices/{enrolled.udid}/vpn").json()["events"]
    assert events[0]["event"] == "cut" and events[0]["by"].startswith("token:")
    assert admin.get("/api/v1/vpn/peers?state=cut").json()["total"] == 1


# ------------------------------------------------------------------ pool

def test_pool_exhaustion_is_a_clear_error_and_removal_releases(server):
    server.instance.settings.extra["wg_network"] = "10.99.0.0/29"  # .2 .. .6: five clients
    udids = [make_device(server) for _ in range(6)]
    got = [provision(server, u, send_profile=False)["address"] for u in udids[:5]]
    assert sorted(got) == [f"10.99.0.{i}" for i in range(2, 7)]
    with pytest.raises(vpn.PoolExhausted, match=r"10\.99\.0\.0/29 is exhausted: all 5 client addresses"):
        provision(server, udids[5], send_profile=False)
    emit(server, "device.retired", udids[0])
    assert peer_row(server, udids[0]).address_v4 is None
    assert provision(server, udids[5], send_profile=False)["address"] == got[0]

    # An enrollment that finds the pool full still enrolls (VPN is provisioned later).
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    with server.session() as s:
        assert s.scalar(select(Device).where(Device.udid == sim.udid)).enrollment_state == "enrolled"
    assert peer_row(server, sim.udid) is None
    sim.close()


def test_allocation_retries_when_an_address_is_taken_concurrently(server, monkeypatch):
    from vpn import pool

    first, second = make_device(server), make_device(server)
    taken = provision(server, first, send_profile=False)["address"]
    real_random, calls = pool._random_address, []

    def taken_first(*args, **kw):  # the first try hits the other transaction's address
        calls.append(1)
        return ipaddress.IPv4Address(taken) if len(calls) == 1 else real_random(*args, **kw)

    monkeypatch.setattr(pool, "_random_address", taken_first)
    addr = provision(server, second, send_profile=False)["address"]
    assert len(calls) == 2 and addr != taken
    with server.session() as s:  # the conflict inserted nothing: one peer each, distinct addresses
        assert sorted(s.scalars(select(WireGuardPeer.address_v4))) == sorted([taken, addr])


def test_allocation_reads_the_used_set_only_when_probes_keep_hitting_taken_addresses(server, monkeypatch):
    """Random tries against the unique index find a free address without reading every address in
    use; a nearly full pool (every try taken) falls back to the whole used set and still allocates."""
    from vpn import pool

    server.instance.settings.extra["wg_network"] = "10.98.0.0/29"  # .2 .. .6: five clients
    real_used, scans = pool._used, []

    def counted(*args, **kw):
        scans.append(1)
        return real_used(*args, **kw)

    monkeypatch.setattr(pool, "_used", counted)
    got = [provision(server, make_device(server), send_profile=False)["address"]]
    assert scans == []  # an empty pool: the first try is free, nothing else is read
    # The last ones, with four of five taken, may need the scan; it finds the one left.
    got += [provision(server, make_device(server), send_profile=False)["address"] for _ in range(4)]
    assert sorted(got, key=ipaddress.IPv4Address) == [f"10.98.0.{i}" for i in range(2, 7)]
    probed = len(scans)
    with pytest.raises(vpn.PoolExhausted):
        provision(server, make_device(server), send_profile=False)
    assert len(scans) > probed  # every try hit a taken address: the scan decided the pool is full


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_peer_made_meanwhile_by_another_request_is_a_conflict_not_a_retry_loop(server, monkeypatch):
    """A new peer is one INSERT … ON CONFLICT DO NOTHING: when the row it did not insert is the
    device's own peer (another request made it after this one looked), that is a clear 409, not
    25 tries for another address and a "pool exhausted"; the transaction is not aborted."""
    from vpn import service

    udid = make_device(server)
    first = provision(server, udid, send_profile=False)
    monkeypatch.setattr(service, "_peer", lambda session, device: None)  # the stale look
    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == udid))
        with pytest.raises(vpn.WrongState, match="another request") as raised:
            vpn.provision_peer(s, server.instance, device, send_profile=False)
        assert raised.value.status == 409
        assert s.scalar(select(WireGuardPeer.address_v4).where(WireGuardPeer.device_id == device.id)) == first["address"]
    assert peer_row(server, udid).public_key == first["public_key"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_provisioning_never_duplicates_addresses(server):
    udids = [make_device(server) for _ in range(24)]
    errors: list = []

    def worker(chunk):
        try:
            for udid in chunk:
                provision(server, udid, send_profile=False)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(udids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    addresses = [peer_row(server, u).address_v4 for u in udids]
    assert len(set(addresses)) == len(udids) and None not in addresses
    assert len(config_peers(server)) == len(udids)


# ------------------------------------------------------------------ removal

def test_retire_and_checkout_remove_the_peer(server):
    sims = []
    for _ in range(2):
        sim = server.simulator()
        sim.enroll(server.enrollment_url())
        server.wait_pushes()
        sim.process_commands()
        sims.append(sim)
    retired, leaving = sims
    pub_r, pub_l = peer_row(server, retired.udid).public_key, peer_row(server, leaving.udid).public_key
    assert {pub_r, pub_l} <= set(config_peers(server))

    emit(server, "device.retired", retired.udid)
    row = peer_row(server, retired.udid)
    assert row.state == "removed" and row.address_v4 is None and row.private_key_enc is None
    assert pub_r not in config_peers(server)

    assert leaving.checkout().status_code == 200  # real CheckOut over HTTPS
    assert peer_row(server, leaving.udid).state == "removed"
    assert config_peers(server) == {}
    with server.session() as s:
        events = [e.event for e in s.scalars(select(VpnEvent).order_by(VpnEvent.id))]
    assert events.count("removed") == 2
    for sim in sims:
        sim.close()


# ------------------------------------------------------------------ apply step

def test_syncconf_applier_pipes_stripped_config_to_wg(server, enrolled, tmp_path):
    # `wg syncconf` needs the WireGuard kernel module, which these machines do not have: a stub in
    # its place records the command line and what would have been applied (the config itself is
    # checked with the real `wg-quick strip`).
    log_file, stdin_file = tmp_path / "wg.args", tmp_path / "wg.stdin"
    stub = tmp_path / "wg-stub"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {log_file}\n[ \"$1\" = syncconf ] && cat > {stdin_file}\n"
                    "[ -f " + str(tmp_path / "fail") + " ] && { echo 'Key is not the correct length or format: "
                    "`AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='\"'\" >&2; exit 1; }\nexit 0\n")
    stub.chmod(0o755)
    server.instance.settings.extra.update(wg_apply="syncconf", wg_bin=str(stub))
    public = peer_row(server, enrolled.udid).public_key
    vpn_policy(server)

    assert judge(server, enrolled, passcode=False) == "non_compliant"
    server.dispatcher.wait_idle(timeout=30)
    calls = log_file.read_text().splitlines()
    # Off the live interface at once (incremental), and the full config synced as well.
    assert calls.count(f"set wg0 peer {public} remove") == 1 and "syncconf wg0 /dev/stdin" in calls
    fed = stdin_file.read_text()
    assert fed == wg_quick_strip(config_path(server)) and public not in fed and "Address" not in fed

    (tmp_path / "fail").touch()
    assert judge(server, enrolled, passcode=True) == "compliant"
    server.dispatcher.wait_idle(timeout=30)
    with server.session() as s:
        last = s.scalar(select(VpnApply).order_by(VpnApply.id.desc()).limit(1))
    assert last.method == "syncconf" and last.ok is False
    assert "AAAAAAAA" not in last.detail and "<key>" in last.detail
    # The file is right even though the apply failed; the reconcile job retries the apply.
    assert public in peers_in_config_text(config_path(server).read_text())
    (tmp_path / "fail").unlink()
    from vpn.jobs import reconcile

    reconcile(server.runtime)
    with server.session() as s:
        last = s.scalar(select(VpnApply).order_by(VpnApply.id.desc()).limit(1))
    assert last.ok is True and public in stdin_file.read_text()


# ------------------------------------------------------------------ IKEv2

def test_ikev2_profile_with_pkcs12_identity(server, tmp_path):
    extra = server.instance.settings.extra
    extra.update(vpn_kind="ikev2", ikev2_remote_address="vpn.vpcp.gov.vn")
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    (cmd,) = install_commands(sim)
    profile = plistlib.loads(openssl_verify_profile(server, cmd["Command"]["Payload"], tmp_path))
    by_type = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    identity, vpn_payload = by_type["com.apple.security.pkcs12"], by_type["com.apple.vpn.managed"]
    ike = vpn_payload["IKEv2"]
    assert vpn_payload["VPNType"] == "IKEv2"
    assert ike["AuthenticationMethod"] == "Certificate"
    assert ike["PayloadCertificateUUID"] == identity["PayloadUUID"]
    assert ike["RemoteAddress"] == "vpn.vpcp.gov.vn" and ike["RemoteIdentifier"] == "vpn.vpcp.gov.vn"

    key, cert, _ = pkcs12.load_key_and_certificates(identity["PayloadContent"], identity["Password"].encode())
    assert key is not None and cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert server.instance.ca.issued_this(cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [ike["LocalIdentifier"]]
    pem = tmp_path / "vpn-client.pem"
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    check = subprocess.run(["openssl", "verify", "-CAfile", server.ca_path, "-purpose", "sslclient", str(pem)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    # No WireGuard peer, and cut/restore work through the CRL.
    assert peer_row(server, sim.udid) is None
    crl_path = vpn_settings(server.instance).crl_path
    vpn_policy(server)
    assert judge(server, sim, passcode=False) == "non_compliant"
    server.dispatcher.wait_idle(timeout=30)
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.certificate_hold
    assert crl.is_signature_valid(server.instance.ca.certificate.public_key())
    assert judge(server, sim, passcode=True) == "compliant"
    server.dispatcher.wait_idle(timeout=30)
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is None
    with server.session() as s:
        row = s.scalar(select(VpnCertificate))
        assert row.state == "active" and int(row.serial, 16) == cert.serial_number
    sim.close()


def test_per_device_kind_override(server):
    wg_dev, ike_dev = make_device(server), make_device(server, serial_number="SITE2IPAD")
    server.instance.settings.extra["vpn_kind_overrides"] = "SITE2IPAD=ikev2"
    assert provision(server, wg_dev, send_profile=False)["kind"] == "wireguard"
    status = provision(server, ike_dev)
    assert status["kind"] == "ikev2" and status["state"] == "active"
    with server.session() as s:
        cmd = s.scalar(select(Command).where(Command.request_type == "InstallProfile"))
        assert cmd.requested_by == "vpn"


# ------------------------------------------------------------------ misc

def test_render_handles_a_large_office(server):
    """10,000 peers render into a config wg-quick accepts (the time it takes: bench/bench_vpn.py)."""
    vs = vpn_settings(server.instance)
    from vpn.serverconf import PeerLine

    peers = []
    for i in range(10_000):
        _priv, pub = vpn_keys.generate_keypair()
        peers.append(PeerLine(pub, vpn_keys.generate_psk(), str(vs.network.network_address + 2 + i), None, f"device {i}"))
    text_ = render_server_config(vpn_keys.server_private_key(server.instance.settings.secrets_dir), vs, peers)
    path = server.instance.settings.instance_dir / "big" / "wg0.conf"
    path.parent.mkdir()
    path.write_text(text_)
    path.chmod(0o600)
    assert len(peers_in_config_text(wg_quick_strip(path))) == 10_000


def test_vpn_cli(server, enrolled):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, IPAD_MDM_INSTANCE=str(server.instance.settings.instance_dir),
               DATABASE_URL=server.instance.settings.database_url, IPAD_MDM_BASE_URL=server.url)
    cli = str(Path(sys.executable).with_name("ipad-mdm"))

    def run(*args, check=True):
        p = subprocess.run([cli, "vpn", *args], env=env, capture_output=True, text=True, timeout=120)
        assert not check or p.returncode == 0, p.stderr
        return p

    peers = json.loads(run("list").stdout)
    assert peers["total"] == 1 and peers["peers"][0]["udid"] == enrolled.udid
    assert "private" not in run("show", enrolled.udid).stdout.lower()
    run("cut", enrolled.udid, "--reason", "điều tra sự cố")
    assert json.loads(run("list", "--state", "cut").stdout)["total"] == 1
    assert peer_row(server, enrolled.udid).public_key not in config_peers(server)
    run("restore", enrolled.udid, "--reason", "đã xử lý")
    assert peer_row(server, enrolled.udid).public_key in config_peers(server)
    synced = json.loads(run("sync").stdout)
    assert synced["ok"] is True and synced["active_peers"] == 1
    missing = run("show", "NOPE", check=False)
    assert missing.returncode == 1 and "unknown device" in missing.stderr
