"""Tunnel address allocation from the configured pool.

The unique constraints on `address_v4` / `address_v6` are the real guarantee:
two workers may pick the same free address, the second INSERT/UPDATE fails,
its SAVEPOINT is rolled back and it tries again with a fresh view.

A free address is first looked for at random against the unique index, so an enrollment into a
fleet of 10,000 touches a row or two, not the 10,000 addresses in use: a new peer is inserted with
a random address (ON CONFLICT DO NOTHING: a taken one inserts nothing), an existing peer that needs
one probes first (one indexed lookup each). Only when a few tries all hit taken addresses (a pool
nearly full) is the whole used set read; then the lowest free address is taken, and a random free
one on a retry, so a burst of enrollments does not keep colliding on the same address.
"""
from __future__ import annotations

import ipaddress
import logging
import random

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import WireGuardPeer
from .settings import VpnSettings

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 25
PROBES = 8


class PoolExhausted(RuntimeError):
    """No free client address is left in the configured network."""


def capacity(vs: VpnSettings) -> int:
    first, last = _client_range(vs)
    return last - first + 1


def _client_range(vs: VpnSettings) -> tuple[int, int]:
    # The network address, the server (.1) and the broadcast address are never handed out.
    return int(vs.network.network_address) + 2, int(vs.network.broadcast_address) - 1


def _used(session: Session, vs: VpnSettings, exclude_id: int | None) -> set[int]:
    stmt = select(WireGuardPeer.address_v4).where(WireGuardPeer.address_v4.is_not(None))
    if exclude_id is not None:
        stmt = stmt.where(WireGuardPeer.id != exclude_id)
    used = set()
    for value in session.scalars(stmt):
        addr = ipaddress.IPv4Address(value)
        if addr in vs.network:  # addresses of an older, different pool do not block this one
            used.add(int(addr))
    return used


def _random_address(vs: VpnSettings) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(random.randint(*_client_range(vs)))


def _random_addresses(vs: VpnSettings, n: int) -> list[ipaddress.IPv4Address]:
    """n distinct random client addresses."""
    first, last = _client_range(vs)
    return [ipaddress.IPv4Address(v) for v in random.sample(range(first, last + 1), n)]


def _probe(session: Session, vs: VpnSettings, exclude_id: int | None) -> ipaddress.IPv4Address | None:
    """A random address the index says is free, or None after PROBES taken ones."""
    for _ in range(PROBES):
        value = _random_address(vs)
        holder = session.scalar(select(WireGuardPeer.id).where(WireGuardPeer.address_v4 == str(value)))
        if holder is None or holder == exclude_id:
            return value
    return None


def _candidate(vs: VpnSettings, used: set[int], *, spread: bool) -> ipaddress.IPv4Address | None:
    first, last = _client_range(vs)
    free_count = (last - first + 1) - len(used)
    if free_count <= 0:
        return None
    if spread:
        # Random probing is O(1) expected while the pool is not nearly full.
        for _ in range(64):
            value = random.randint(first, last)
            if value not in used:
                return ipaddress.IPv4Address(value)
    for value in range(first, last + 1):
        if value not in used:
            return ipaddress.IPv4Address(value)
    return None


def v6_for(vs: VpnSettings, v4: ipaddress.IPv4Address) -> str | None:
    if vs.network6 is None:
        return None
    # Same host index in both families: one allocation, no second race.
    return str(vs.network6.network_address + (int(v4) - int(vs.network.network_address)))


def lock_for_allocation(session: Session) -> None:
    """On SQLite, take the database write lock before reading the used set.

    SQLite serialises writers, so once this transaction holds the lock nobody
    can commit a conflicting address before we do. (pysqlite's SAVEPOINTs are
    unreliable unless a transaction is already open, which this also ensures.)
    PostgreSQL needs nothing: the unique index plus SAVEPOINT retry handles it.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE vpn_wireguard_peers SET id = id WHERE 0 = 1"))


def _exhausted(vs: VpnSettings) -> PoolExhausted:
    return PoolExhausted(f"VPN address pool {vs.network} is exhausted: all {capacity(vs)} client addresses are in use. "
                         "Remove peers of retired devices or configure a larger IPAD_MDM_WG_NETWORK.")


def _dialect_insert(session: Session):
    """The INSERT construct with ON CONFLICT of the session's database."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


class PeerExists(RuntimeError):
    """Another transaction gave this device its peer first."""


def insert_peer(session: Session, vs: VpnSettings, **values) -> WireGuardPeer:
    """A new peer row with a free address, in one statement: INSERT … ON CONFLICT DO NOTHING
    RETURNING. A conflict (the address is taken, or another transaction took it first) returns no
    row and the next candidate is tried; unlike a failed INSERT it does not abort the transaction,
    so no SAVEPOINT is needed (an enrollment's peer was an INSERT, a SAVEPOINT, an UPDATE and its
    RELEASE)."""
    lock_for_allocation(session)
    insert = _dialect_insert(session)
    for attempt in range(MAX_ATTEMPTS):
        # The first tries are random addresses put straight to the unique index (a taken one inserts
        # nothing), not probed first; only when they keep hitting taken ones is the used set read.
        if attempt < PROBES:
            candidate = _random_address(vs)
        else:
            candidate = _candidate(vs, _used(session, vs, None), spread=attempt > PROBES)
        if candidate is None:
            raise _exhausted(vs)
        stmt = (insert(WireGuardPeer).values(**values, address_v4=str(candidate), address_v6=v6_for(vs, candidate))
                .on_conflict_do_nothing().returning(WireGuardPeer))
        peer = session.scalars(stmt, execution_options={"populate_existing": True}).first()
        if peer is not None:
            return peer
        # Nothing inserted: the address was taken concurrently, or the device's peer (or this public
        # key) was made by another transaction meanwhile; only the first is worth another try.
        if session.scalar(select(WireGuardPeer.id).where(WireGuardPeer.device_id == values["device_id"])) is not None:
            raise PeerExists(f"device {values['device_id']} got its VPN peer from another request")
        log.info("VPN address %s taken concurrently; retrying (attempt %d)", candidate, attempt + 1)
    raise PoolExhausted(f"could not allocate a VPN address in {vs.network} after {MAX_ATTEMPTS} attempts (heavy contention)")


def insert_peers(session: Session, vs: VpnSettings, rows: list[dict]) -> dict[int, WireGuardPeer]:
    """New peers for many devices in one INSERT … ON CONFLICT DO NOTHING RETURNING, each with a random
    address, distinct within the batch (a provisioning pass's new enrollments). A row whose address is
    taken, or whose device got its peer from another transaction, inserts nothing and is left out:
    the caller gives those devices insert_peer, one by one. Returns the new peers by device id."""
    first, last = _client_range(vs)
    if not rows or last - first + 1 < 2 * len(rows):
        return {}  # a pool this small: one by one, where a nearly full pool is searched
    lock_for_allocation(session)
    picks = _random_addresses(vs, len(rows))
    stmt = (_dialect_insert(session)(WireGuardPeer).values([dict(row, address_v4=str(a), address_v6=v6_for(vs, a))
                                          for row, a in zip(rows, picks)])
            .on_conflict_do_nothing().returning(WireGuardPeer))
    return {p.device_id: p for p in session.scalars(stmt, execution_options={"populate_existing": True})}


def assign_address(session: Session, vs: VpnSettings, peer: WireGuardPeer) -> None:
    """Give `peer` (already flushed, so it has an id) a free address, retrying on conflicts."""
    lock_for_allocation(session)
    for attempt in range(MAX_ATTEMPTS):
        candidate = _probe(session, vs, peer.id)
        if candidate is None:
            candidate = _candidate(vs, _used(session, vs, peer.id), spread=attempt > 0)
        if candidate is None:
            raise _exhausted(vs)
        try:
            with session.begin_nested():
                peer.address_v4 = str(candidate)
                peer.address_v6 = v6_for(vs, candidate)
                session.flush()
            return
        except IntegrityError:
            # Another transaction took this address first; our SAVEPOINT was
            # rolled back (and the peer's attributes expired). Look again.
            log.info("VPN address %s taken concurrently; retrying (attempt %d)", candidate, attempt + 1)
            session.refresh(peer)
    raise PoolExhausted(f"could not allocate a VPN address in {vs.network} after {MAX_ATTEMPTS} attempts (heavy contention)")
