"""VPN storage: WireGuard peers, IKEv2 certificates, their history, and applies.

Secrets (the device's WireGuard private key and the preshared key) are stored
only as Fernet tokens under the instance data key; the columns are named
`*_enc` so nobody mistakes them for usable keys, and `__repr__` never shows
them.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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
    # NULL: the built-in IKEv2; otherwise the provider (OpenVPN, a VPN app) whose profile carries it.
    provider_key: Mapped[str | None] = mapped_column(String(64), default=None, index=True)

    def __repr__(self) -> str:
        return f"<VpnCertificate id={self.id} device_id={self.device_id} serial={self.serial} state={self.state}>"


class VpnEvent(Base):
    """History: created / rekeyed / cut / restored / removed (the monthly report counts these)."""

    __tablename__ = "vpn_events"
    __table_args__ = (Index("ix_vpn_events_event_at", "event", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))  # wireguard | ikev2 | a provider key
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


# ------------------------------------------------------------------ providers, inventory, campaigns (issue #19)

PROVIDER_KINDS = ("openvpn", "vpn_app")
PROVIDER_AUTH = ("device_certificate", "imported_identity")
CAMPAIGN_STATES = ("running", "paused", "rolling_back", "rolled_back", "done")
# A device's way through a campaign: install the target, see its tunnel, remove the source.
CAMPAIGN_STEPS = ("pending", "installing", "verifying", "removing_source", "done", "failed",
                  "rolling_back", "rolled_back")


class VpnProvider(Base):
    """A VPN product defined as data by a security officer: OpenVPN Connect from an imported .ovpn,
    or any VPN app by its VPNSubType and VendorConfig. WireGuard and IKEv2 are built in (keys
    "wireguard", "ikev2") and have no row."""

    __tablename__ = "vpn_providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    vpn_subtype: Mapped[str] = mapped_column(String(155))
    vendor_config: Mapped[dict] = mapped_column(JSON, default=dict)   # may be shown
    secret_config_enc: Mapped[str | None] = mapped_column(Text, default=None)  # Fernet(JSON); never shown
    secret_keys: Mapped[list] = mapped_column(JSON, default=list)  # the names of those keys, which may be shown
    auth: Mapped[str] = mapped_column(String(24))
    identity_enc: Mapped[str | None] = mapped_column(Text, default=None)  # Fernet(PKCS#12 + password)
    identity_subject: Mapped[str | None] = mapped_column(String(255), default=None)
    vpn_options: Mapped[dict] = mapped_column(JSON, default=dict)     # ProviderType, on demand, ...
    recognise: Mapped[list] = mapped_column(JSON, default=list)       # profile identifier patterns
    per_app_bundle_ids: Mapped[list] = mapped_column(JSON, default=list)  # per-app VPN: only these managed apps
    verification: Mapped[dict] = mapped_column(JSON, default=dict)    # how its tunnel is seen
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:  # never the secret columns
        return f"<VpnProvider key={self.key} kind={self.kind} subtype={self.vpn_subtype}>"


class VpnInstallation(Base):
    """A VPN configuration an iPad reported in its ProfileList, and whose it is."""

    __tablename__ = "vpn_installations"
    __table_args__ = (UniqueConstraint("device_id", "profile_identifier"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    profile_identifier: Mapped[str] = mapped_column(String(255))
    provider_key: Mapped[str] = mapped_column(String(64), index=True)  # "unknown" when nothing matches
    managed_by_us: Mapped[bool] = mapped_column(Boolean, default=False)
    profile_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VpnTunnelSighting(Base):
    """When the server side last saw this device's tunnel of this provider (a WireGuard handshake,
    an OpenVPN server's client list)."""

    __tablename__ = "vpn_tunnel_sightings"
    __table_args__ = (UniqueConstraint("device_id", "provider_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    provider_key: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[dt.datetime] = mapped_column()
    source: Mapped[str] = mapped_column(String(32))


class VpnCampaign(Base):
    """Moving the fleet from one VPN provider to another, pilot units first, then all."""

    __tablename__ = "vpn_campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    source_key: Mapped[str] = mapped_column(String(64))
    target_key: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(16), default="pilot")  # pilot | all
    state: Mapped[str] = mapped_column(String(16), default="running")
    verify_hours: Mapped[int] = mapped_column(Integer, default=24)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VpnCampaignDevice(Base):
    __tablename__ = "vpn_campaign_devices"
    __table_args__ = (UniqueConstraint("campaign_id", "device_id"),
                      Index("ix_vpn_campaign_devices_step", "campaign_id", "step"))

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("vpn_campaigns.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    step: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(255), default=None)
    source_profile: Mapped[str | None] = mapped_column(String(255), default=None)
    command_uuid: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    installed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    tunnel_seen_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VpnGateway(Base):
    """A VPN gateway on its own host, fed by `ipad-mdm vpn agent` through its own Celery queue."""

    __tablename__ = "vpn_gateways"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    interface: Mapped[str] = mapped_column(String(15), default="wg0")
    key_enc: Mapped[str] = mapped_column(Text)  # Fernet(agent key) under the instance data key; never shown
    desired_seq: Mapped[int] = mapped_column(Integer, default=0)  # the last change sent
    applied_seq: Mapped[int] = mapped_column(Integer, default=0)  # the last change the agent reported applied
    applied_peers: Mapped[int | None] = mapped_column(Integer, default=None)
    applied_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    applied_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_report_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<VpnGateway {self.name} desired={self.desired_seq} applied={self.applied_seq}>"
