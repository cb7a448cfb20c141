"""VPN storage: WireGuard peers, IKEv2 certificates, their history, and applies.

Secrets (the device's WireGuard private key and the preshared key) are stored
only as Fernet tokens under the instance data key; the columns are named
`*_enc` so nobody mistakes them for usable keys, and `__repr__` never shows
them.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ipad_mdm.db import Base, utcnow

PEER_STATES = ("active", "cut", "removed")


class WireGuardPeer(Base):
    """One device's WireGuard peer on the office gateway (one row per device, reused)."""

    __tablename__ = "vpn_wireguard_peers"
    __table_args__ = (Index("ix_vpn_wireguard_peers_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    public_key: Mapped[str] = mapped_column(String(44), unique=True)
    # Fernet tokens (instance data key). NULL once the peer is removed: a key
    # nobody needs any more is a key that cannot leak.
    private_key_enc: Mapped[str | None] = mapped_column(Text, default=None)
    preshared_key_enc: Mapped[str | None] = mapped_column(Text, default=None)
    # Unique: the database, not the application, guarantees no two peers share
    # an address (concurrent allocations retry on conflict). NULL = released.
    address_v4: Mapped[str | None] = mapped_column(String(15), unique=True, default=None)
    address_v6: Mapped[str | None] = mapped_column(String(39), unique=True, default=None)
    state: Mapped[str] = mapped_column(String(16), default="active")
    # Who cut it: "compliance" cuts are undone by a compliant verdict, "manual" ones are not.
    cut_by: Mapped[str | None] = mapped_column(String(16), default=None)
    reason: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cut_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    restored_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    removed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    profile_command_uuid: Mapped[str | None] = mapped_column(String(64), default=None)

    def __repr__(self) -> str:  # never the key columns
        return f"<WireGuardPeer id={self.id} device_id={self.device_id} address={self.address_v4} state={self.state}>"


class VpnCertificate(Base):
    """A client certificate issued for certificate-authenticated IKEv2.

    Its private key is never stored: it exists only inside the PKCS#12 payload
    of the signed profile sent to the device. Cut / removed certificates are
    listed in the CRL the gateway reads (certificateHold for cut, so a restore
    simply drops them from the next CRL).
    """

    __tablename__ = "vpn_certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)  # hex, lowercase
    sha256_fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    local_identifier: Mapped[str] = mapped_column(String(255))
    not_after: Mapped[dt.datetime] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="active")
    cut_by: Mapped[str | None] = mapped_column(String(16), default=None)
    reason: Mapped[str | None] = mapped_column(String(255), default=None)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cut_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    restored_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    removed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    profile_command_uuid: Mapped[str | None] = mapped_column(String(64), default=None)

    def __repr__(self) -> str:
        return f"<VpnCertificate id={self.id} device_id={self.device_id} serial={self.serial} state={self.state}>"


class VpnEvent(Base):
    """History: created / rekeyed / cut / restored / removed (the monthly report counts these)."""

    __tablename__ = "vpn_events"
    __table_args__ = (Index("ix_vpn_events_event_at", "event", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # wireguard | ikev2
    event: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(255), default=None)
    by: Mapped[str | None] = mapped_column(String(128), default=None)
    address: Mapped[str | None] = mapped_column(String(45), default=None)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VpnApply(Base):
    """What was written / applied to the gateway, and whether it worked."""

    __tablename__ = "vpn_applies"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    method: Mapped[str] = mapped_column(String(32))
    config_sha256: Mapped[str] = mapped_column(String(64))
    active_peers: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
