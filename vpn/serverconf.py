"""The gateway side: regenerate the WireGuard server config from the database and apply it.

Why regenerate the whole file instead of patching it: it is idempotent. Any
worker, the periodic reconcile job or an operator can run it at any time and
the result depends only on committed database state, so a crash between
commit and apply, or two workers applying at once, can never leave the
gateway with a peer the database says is cut. A file lock serialises writers;
each one reads the database *inside* the lock, so the last writer always
writes the newest state.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Callable, Iterable, Protocol

from cryptography import x509
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session
from wgconfig import WGConfig

from ipad_mdm import files
from ipad_mdm.db import after_commit_once, gather_after_commit
from ipad_mdm.jobs import background_task
from ipad_mdm.db import utcnow
from mdm import Device

from .keys import server_private_key
from .models import VpnApply, VpnCertificate, WireGuardPeer
from .settings import VpnSettings, vpn_settings

log = logging.getLogger(__name__)

# Anything that looks like a WireGuard key is cut out of tool output before it
# is logged or stored (wg prints the offending value on a malformed key).
_KEYLIKE = re.compile(r"[A-Za-z0-9+/]{42,43}=")


def redact(text: str) -> str:
    return _KEYLIKE.sub("<key>", text)


class ApplyError(RuntimeError):
    pass


@dataclass(frozen=True)
class PeerLine:
    public_key: str
    preshared_key: str
    address_v4: str
    address_v6: str | None
    comment: str

    @property
    def allowed_ips(self) -> str:
        return f"{self.address_v4}/32" + (f", {self.address_v6}/128" if self.address_v6 else "")


@dataclass
class SyncResult:
    path: Path
    sha256: str
    active_peers: int
    changed: bool
    applied: bool
    method: str
    ok: bool
    detail: str
    seconds: float


# ------------------------------------------------------------------ rendering

def render_server_config(server_private: str, vs: VpnSettings, peers: Iterable[PeerLine]) -> str:
    """wg-quick text for the gateway, built with `wgconfig`.

    The [Interface] is built through wgconfig's API. Peer sections are appended
    to `WGConfig.lines` (wgconfig's own document model) directly: its
    add_peer()/add_attr() re-parse the whole document on every call, which is
    quadratic - minutes for 10,000 peers instead of milliseconds.
    """
    wc = WGConfig()
    wc.initialize_file("# Managed by ipad-mdm (vpn package). Regenerated from the database; do not edit.")
    wc.add_attr(None, "PrivateKey", server_private)
    wc.add_attr(None, "ListenPort", vs.listen_port)
    addresses = [f"{vs.server_address}/{vs.network.prefixlen}"]
    if vs.network6 is not None:
        addresses.append(f"{vs.server_address6}/{vs.network6.prefixlen}")
    wc.add_attr(None, "Address", ", ".join(addresses))
    lines = wc.lines
    for p in peers:
        allowed = p.allowed_ips
        lines.extend((
            "",
            f"# {p.comment}",
            "[Peer]",
            f"PublicKey = {p.public_key}",
            f"PresharedKey = {p.preshared_key}",
            f"AllowedIPs = {allowed}",
        ))
    wc.invalidate_data()
    buf = StringIO()
    wc.write_to_fileobj(buf)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Readers (wg-quick, syncconf) see either the old or the new file, never a half-written
    one; 0600 from the first byte because the file holds the server key and preshared keys.
    The folder may be root's /etc/wireguard: its mode is left alone there."""
    files.write_atomic(path, data, mode)


# ------------------------------------------------------------------ appliers

class Applier(Protocol):
    name: str

    def apply(self, config_path: Path, vs: VpnSettings) -> str:
        """Make the gateway use `config_path`; return a short description; raise ApplyError."""


class FileApplier:
    """Only the file is written; something else (a systemd .path unit running
    `wg syncconf`, or `wg-quick up` at boot) picks it up. Default, because the
    MDM process should not need CAP_NET_ADMIN."""

    name = "file"

    def apply(self, config_path: Path, vs: VpnSettings) -> str:
        return f"written {config_path}"


class SyncconfApplier:
    """`wg syncconf <iface> <(wg-quick strip <file>)>` without a shell.

    syncconf changes only the peers that differ, so live sessions of other
    devices are not interrupted. The stripped text contains keys: it is piped,
    never written to disk or logged.
    """

    name = "syncconf"

    def __init__(self, timeout: float = 30.0):
        self.timeout = timeout

    def _run(self, argv: list[str], stdin: bytes | None = None) -> bytes:
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise ApplyError(f"{argv[0]} not found (install wireguard-tools or set IPAD_MDM_WG_BIN/IPAD_MDM_WG_QUICK_BIN)") from None
        except subprocess.TimeoutExpired:
            raise ApplyError(f"{' '.join(argv[:2])} timed out after {self.timeout:.0f}s") from None
        if proc.returncode != 0:
            err = redact(proc.stderr.decode("utf-8", "replace").strip())[:500]
            raise ApplyError(f"{' '.join(argv[:2])} failed with exit code {proc.returncode}: {err}")
        return proc.stdout

    def apply(self, config_path: Path, vs: VpnSettings) -> str:
        stripped = self._run([vs.wg_quick_bin, "strip", str(config_path)])
        self._run([vs.wg_bin, "syncconf", vs.interface, "/dev/stdin"], stdin=stripped)
        return f"wg syncconf {vs.interface}"

    def remove(self, public_keys: list[str], vs: VpnSettings) -> str:
        """Take peers off the live interface at once: `wg set <iface> peer <key> remove` (public
        keys only, nothing secret on the command line)."""
        argv = [vs.wg_bin, "set", vs.interface]
        for key in public_keys:
            argv += ["peer", key, "remove"]
        self._run(argv)
        return f"wg set {vs.interface}: {len(public_keys)} peer(s) removed"


_APPLIERS: dict[str, Callable[[], Applier]] = {"file": FileApplier, "syncconf": SyncconfApplier}


def register_applier(name: str, factory: Callable[[], Applier]) -> None:
    """Plug in another way to apply the config (e.g. an agent on a separate gateway host)."""
    _APPLIERS[name] = factory


def applier_for(vs: VpnSettings) -> Applier:
    factory = _APPLIERS.get(vs.apply_method)
    if factory is None:
        raise ApplyError(f"IPAD_MDM_WG_APPLY={vs.apply_method!r} is unknown; known: {', '.join(sorted(_APPLIERS))}")
    return factory()


# ------------------------------------------------------------------ sync

_process_lock = threading.Lock()
# config path -> (sha256 last applied successfully by this process)
_last_applied: dict[Path, str] = {}


def active_peers(session: Session, instance, *, device_ids=None, keys=()) -> list[PeerLine]:
    """The peers a gateway carries (active, with an address), their preshared keys decrypted; with
    `device_ids`, only those devices' peers and the peers holding one of `keys`."""
    fernet = instance.fernet()
    stmt = (select(WireGuardPeer.public_key, WireGuardPeer.preshared_key_enc, WireGuardPeer.address_v4,
                   WireGuardPeer.address_v6, Device.udid, Device.serial_number)
            .join(Device, Device.id == WireGuardPeer.device_id)
            .where(WireGuardPeer.state == "active", WireGuardPeer.address_v4.is_not(None)))
    if device_ids is not None:
        stmt = stmt.where(WireGuardPeer.device_id.in_(device_ids) | WireGuardPeer.public_key.in_(list(keys)))
    rows = session.execute(stmt.order_by(WireGuardPeer.id))
    peers = []
    for public, psk_enc, v4, v6, udid, serial in rows:
        try:
            psk = fernet.decrypt(psk_enc.encode("ascii")).decode("ascii")
        except (InvalidToken, AttributeError):
            # Wrong data key (restored DB from another instance?): leave the peer
            # out rather than write a config wg refuses entirely.
            log.error("VPN peer %s (device %s): preshared key cannot be decrypted; peer left out", public, udid)
            continue
        peers.append(PeerLine(public, psk, v4, v6, f"device {udid} serial {serial or '-'}"))
    return peers


def sync_server_config(instance, *, force_apply: bool = False, record: bool = True) -> SyncResult:
    """Regenerate the server config from committed state, write it if it changed, apply it.

    Never raises for apply failures (the caller already committed; failing the
    request would not undo anything): the failure is logged, recorded in
    vpn_applies, and the reconcile job retries.
    """

    started = time.perf_counter()
    vs = vpn_settings(instance)
    path = vs.config_path
    files.private_dir(path.parent)  # a folder owned by root (e.g. /etc/wireguard) is left as it is
    lock_fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    with _process_lock, os.fdopen(lock_fd, "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with instance.database.session() as s:
            peers = active_peers(s, instance)
            sync_crl(s, instance, vs)
        text = render_server_config(server_private_key(instance.settings.secrets_dir), vs, peers)
        data = text.encode("ascii")
        digest = hashlib.sha256(data).hexdigest()
        try:
            changed = path.read_bytes() != data
        except FileNotFoundError:
            changed = True
        if changed:
            write_atomic(path, data)
        applied, ok, detail, method = False, True, "unchanged", vs.apply_method
        if changed or force_apply or _last_applied.get(path) != digest:
            applied = True
            try:
                detail = applier_for(vs).apply(path, vs)
                _last_applied[path] = digest
            except ApplyError as exc:
                ok, detail = False, str(exc)
                _last_applied.pop(path, None)
                log.error("VPN config %s written but not applied: %s", path, detail)
            except Exception as exc:  # a plug-in applier must not break the caller either
                ok, detail = False, f"{type(exc).__name__}: {redact(str(exc))[:300]}"
                _last_applied.pop(path, None)
                log.exception("VPN apply step %s crashed", method)
    elapsed = time.perf_counter() - started
    result = SyncResult(path, digest, len(peers), changed, applied, method, ok, detail, elapsed)
    if applied:
        log.info("VPN config %s: %d active peers, sha256 %s, %s (%s) in %.3fs",
                 path, len(peers), digest[:12], detail, "ok" if ok else "FAILED", elapsed)
        if record:
            with instance.database.session() as s:
                s.add(VpnApply(method=method, config_sha256=digest, active_peers=len(peers), ok=ok, detail=detail[:2000]))
    return result


# ------------------------------------------------------------------ IKEv2 CRL

_CRL_VALIDITY = dt.timedelta(hours=48)
_CRL_REFRESH = dt.timedelta(hours=24)


def sync_crl(session: Session, instance, vs: VpnSettings) -> bool:
    """Write the CRL of cut / removed IKEv2 certificates for the gateway (PEM).

    Cut = certificateHold (RFC 5280 lets a held entry disappear again on
    restore); removed = cessationOfOperation. Re-signed only when the revoked
    set changed or half the validity has passed (the CA key may be a slow USB
    token). Nothing is written while no IKEv2 certificate was ever issued.
    """
    rows = session.execute(
        select(VpnCertificate.serial, VpnCertificate.state, VpnCertificate.cut_at, VpnCertificate.removed_at)
        .where(VpnCertificate.state.in_(("cut", "removed")))
        .order_by(VpnCertificate.serial)
    ).all()
    path = vs.crl_path
    if not rows and not path.exists():
        if session.scalar(select(VpnCertificate.id).limit(1)) is None:
            return False
    marker = hashlib.sha256(repr([(r.serial, r.state) for r in rows]).encode()).hexdigest()
    marker_path = path.with_name(path.name + ".sha256")
    try:
        fresh = (marker_path.read_text().strip() == marker
                 and dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc) > utcnow() - _CRL_REFRESH)
    except FileNotFoundError:
        fresh = False
    if fresh:
        return False
    now = utcnow()
    entries = [(int(serial, 16), (cut_at if state == "cut" else removed_at) or now,
                x509.ReasonFlags.certificate_hold if state == "cut" else x509.ReasonFlags.cessation_of_operation)
               for serial, state, cut_at, removed_at in rows]
    crl = instance.ca.build_crl(entries, next_update_hours=_CRL_VALIDITY.total_seconds() / 3600,
                                number=int(now.timestamp()), backdate_minutes=5)
    write_atomic(path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    write_atomic(marker_path, marker.encode(), mode=0o644)
    log.info("IKEv2 CRL %s written: %d revoked/held certificates", path, len(rows))
    return True


# ------------------------------------------------------------------ after-commit wiring

SYNC_TASK = "vpn.sync_config"
REMOVE_TASK = "vpn.remove_peers"
_PENDING_REMOVALS = "vpn.pending_removals"
# When this process last started a regeneration: a run that started after a commit already
# covers it (it reads the committed state), so queued duplicates are skipped.
_last_sync_started = 0.0


def sync_after_commit(session: Session, instance) -> None:
    """Ask for a regeneration once `session`'s transaction has committed, off the request path.

    Writing the gateway config before commit could expose a peer the transaction then rolls
    back. With a dispatcher in the session (requests, jobs) the rewrite runs as the background
    task vpn.sync_config (Celery workers, or the embedded dispatcher's threads); a script
    without one regenerates right after its commit.
    """
    # Once per transaction, whatever savepoints roll back in it (the regeneration reads only what
    # committed): a compliance pass cutting a thousand peers asks once, not a thousand times.
    dispatcher = session.info.get("dispatcher")
    after_commit_once(session, SYNC_TASK, (lambda: _sync_logged(instance)) if dispatcher is None
                      else (lambda: dispatcher.submit(SYNC_TASK, time.time())))


def remove_after_commit(session: Session, instance, public_keys: Iterable[str]) -> None:
    """Cut or removed peers leave the live interface right after commit, before (and whatever
    becomes of) the full regeneration that follows: with 10,000 peers the rewrite takes a
    while, `wg set … remove` does not. Only where the apply mode drives the interface
    (syncconf); in file mode the rewrite is the only way, and it follows as usual."""
    dispatcher = session.info.get("dispatcher")

    def submit(keys):
        unique = sorted(set(keys))
        if not unique:
            return
        if dispatcher is None:
            _remove_logged(instance, unique)
        else:
            dispatcher.submit(REMOVE_TASK, unique)

    # One dispatch per transaction (or savepoint: if it rolls back, so does its dispatch).
    gather_after_commit(session, _PENDING_REMOVALS, list, submit).extend(public_keys)


@background_task(REMOVE_TASK)
def remove_task(rt, public_keys: list[str]) -> dict:
    return _remove_logged(rt.instance, public_keys)


def _remove_logged(instance, public_keys: list[str]) -> dict:
    vs = vpn_settings(instance)
    applier = applier_for(vs)
    if not hasattr(applier, "remove"):
        return {"removed": 0, "detail": f"apply mode {vs.apply_method}: the config rewrite removes them"}
    try:
        detail = applier.remove(list(public_keys), vs)
    except ApplyError as exc:
        # The full regeneration (syncconf) that follows removes them too, and the reconcile job retries.
        log.error("VPN peers not removed from %s at once: %s", vs.interface, exc)
        return {"removed": 0, "detail": str(exc)}
    log.info("VPN: %s", detail)
    return {"removed": len(public_keys), "detail": detail}


_run_lock = threading.Lock()
_rerun = threading.Event()


@background_task(SYNC_TASK)
def sync_task(rt, committed_at: float = 0.0) -> dict:
    """One regeneration at a time per process; a request that arrives meanwhile does not wait (a
    worker slot blocked on the lock is a slot the fast `vpn.remove_peers` cannot have): it marks
    the state dirty and the running regeneration goes once more when it is done."""
    global _last_sync_started
    if _last_sync_started > committed_at:
        return {"skipped": True}
    result = None
    while True:
        if not _run_lock.acquire(blocking=False):
            _rerun.set()
            return {"coalesced": True} if result is None else _summary(result)
        try:
            _rerun.clear()
            _last_sync_started = time.time()
            result = sync_server_config(rt.instance)
        finally:
            _run_lock.release()
        if not _rerun.is_set():
            return _summary(result)


def _summary(result) -> dict:
    return {"changed": result.changed, "applied": result.applied, "peers": result.active_peers}


def _sync_logged(instance) -> None:
    try:
        sync_server_config(instance)
    except Exception:
        # The data is committed; the reconcile job will write the file later.
        log.exception("VPN config regeneration after commit failed; the reconcile job will retry")


def peers_in_config_text(text: str) -> dict[str, dict]:
    """Parse a config (ours or `wg-quick strip` output) back with wgconfig: public key -> attrs."""
    wc = WGConfig()
    wc.read_from_fileobj(StringIO(text))
    return wc.get_peers(keys_only=False)
