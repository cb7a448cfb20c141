"""VPN figures: regenerate / apply the gateway config for a large office.

    .venv/bin/python bench/bench_vpn.py [--peers 10000] [--database-url URL]

Uses a throw-away instance folder (SQLite by default) and prints:
  - render only (wgconfig document -> text) for N peers
  - full regeneration from the database (query + Fernet-decrypt N PSKs + render + atomic write + fsync)
  - `wg-quick strip` of the N-peer file
  - one cut (commit -> after-commit regeneration) with N peers present
  - address allocation with N peers already allocated (with the commit and regeneration, and alone)
  - wgconfig's own add_peer/add_attr API for comparison (quadratic, so only small N)
"""
from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select  # noqa: E402

from ipad_mdm.config import load_settings  # noqa: E402
from ipad_mdm.instance import open_instance  # noqa: E402
from mdm.models import Device  # noqa: E402
from vpn import cut_peer, provision_peer, sync_server_config  # noqa: E402
from vpn.keys import generate_keypair, generate_psk, server_private_key  # noqa: E402
from vpn.models import WireGuardPeer  # noqa: E402
from vpn.serverconf import PeerLine, render_server_config  # noqa: E402
from vpn.settings import vpn_settings  # noqa: E402


def timed(label: str, fn, repeat: int = 3):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    print(f"{label:<62} {best * 1000:9.1f} ms")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=10_000)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    n = args.peers
    tmp = Path(tempfile.mkdtemp(prefix="bench-vpn-"))
    settings = load_settings(tmp, database_url=args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}")
    inst = open_instance(settings)
    vs = vpn_settings(inst)
    fernet = inst.fernet()
    print(f"instance {tmp}  database {inst.database.engine.dialect.name}  peers {n}  network {vs.network}")

    # -- data: N enrolled devices with active peers (bulk insert, not the API: we time the API below)
    t = time.perf_counter()
    devices, peers, lines = [], [], []
    base = int(vs.network.network_address) + 2
    for i in range(n):
        devices.append({"id": i + 1, "udid": str(uuid.uuid4()).upper(), "enrollment_state": "enrolled"})
        private, public = generate_keypair()
        psk = generate_psk()
        addr = str(vs.network.network_address.__class__(base + i))
        peers.append({"device_id": i + 1, "public_key": public, "state": "active", "address_v4": addr,
                      "private_key_enc": fernet.encrypt(private.encode()).decode(),
                      "preshared_key_enc": fernet.encrypt(psk.encode()).decode()})
        lines.append(PeerLine(public, psk, addr, None, f"device {i}"))
    with inst.database.session() as s:
        s.execute(insert(Device), devices)
        s.execute(insert(WireGuardPeer), peers)
    print(f"{'setup: generate + encrypt + insert ' + str(n) + ' peers':<62} {(time.perf_counter() - t) * 1000:9.1f} ms")

    server_key = server_private_key(inst.settings.secrets_dir)
    text = timed(f"render only ({n} peers, {len(render_server_config(server_key, vs, lines[:1]))} B/1 peer)",
                 lambda: render_server_config(server_key, vs, lines))
    print(f"{'  config size':<62} {len(text) / 1024:9.1f} KiB")

    def full():
        vs.config_path.unlink(missing_ok=True)
        return sync_server_config(inst, record=False)

    res = timed(f"full regeneration from DB + atomic write ({n} peers)", full)
    assert res.active_peers == n, res
    timed(f"regeneration, nothing changed ({n} peers)", lambda: sync_server_config(inst, record=False))
    timed(f"wg-quick strip ({n} peers)",
          lambda: subprocess.run(["wg-quick", "strip", str(vs.config_path)], capture_output=True, check=True), repeat=1)

    # -- one cut through the public API; commit triggers the after-commit regeneration
    def one_cut():
        with inst.database.session() as s:
            device = s.get(Device, 1)
            peer = s.scalar(select(WireGuardPeer).where(WireGuardPeer.device_id == 1))
            peer.state = "active"  # make every repeat a real change
            s.flush()
            cut_peer(s, inst, device, "bench")

    timed(f"cut_peer + commit + regenerate ({n} peers)", one_cut)

    # -- allocation with N addresses in use
    with inst.database.session() as s:
        extra = [Device(udid=str(uuid.uuid4()).upper(), enrollment_state="enrolled") for _ in range(20)]
        s.add_all(extra)
    ids = [d.id for d in extra]
    t = time.perf_counter()
    for device_id in ids:
        with inst.database.session() as s:
            provision_peer(s, inst, s.get(Device, device_id), send_profile=False)
    per = (time.perf_counter() - t) / len(ids)
    print(f"{'provision_peer + commit + regenerate, per peer (' + str(n) + ' in use)':<62} {per * 1000:9.1f} ms")

    # -- the address alone (what an enrollment's request pays for it), rolled back each time
    from vpn import pool

    vs = vpn_settings(inst)
    spent, allocated = 0.0, []
    for device_id in ids[:10]:
        with inst.database.session() as s:
            peer = s.scalar(select(WireGuardPeer).where(WireGuardPeer.device_id == device_id))
            peer.address_v4 = None
            s.flush()
            t = time.perf_counter()
            pool.assign_address(s, vs, peer)
            spent += time.perf_counter() - t
            allocated.append(peer.address_v4)
            s.rollback()
    if len(allocated) != 10 or not all(a and ipaddress.IPv4Address(a) in vs.network for a in allocated):
        raise SystemExit(f"bench: allocation did not give ten addresses in the pool: {allocated}")
    print(f"{'address allocation alone, per peer (' + str(n) + ' in use)':<62} {spent / 10 * 1000:9.1f} ms")

    # -- wgconfig's own API, for comparison (why serverconf appends lines itself)
    from wgconfig import WGConfig

    for m in (250, 500, 1000):
        def via_api(m=m):
            wc = WGConfig()
            wc.add_attr(None, "PrivateKey", server_key)
            for p in lines[:m]:
                wc.add_peer(p.public_key)
                wc.add_attr(p.public_key, "PresharedKey", p.preshared_key)
                wc.add_attr(p.public_key, "AllowedIPs", f"{p.address_v4}/32")
            return wc.lines

        timed(f"wgconfig add_peer/add_attr API ({m} peers)", via_api, repeat=1)
    inst.database.dispose()


if __name__ == "__main__":
    main()
