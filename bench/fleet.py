"""A fleet of thousands of enrolled iPads for the benches, in minutes rather than hours.

A sample of iPads enrolls over the real protocol first (profile, SCEP, Authenticate, TokenUpdate,
the five inventory answers). The rest of the fleet is then made the way the server itself would
have recorded them, without the round trips:

  * each iPad gets its own identity certificate, issued by the instance's CA with the CA key
    (`CertificateAuthority.issue_device_identity`, what SCEP calls), so the server verifies a
    real CA signature and a real per-device fingerprint on every check-in;
  * all of them share one RSA device key (10,000 RSA key generations would take longer than
    the whole bench; the key is the device's, not the server's, so this changes no server cost);
  * the device rows carry a copy of the sample iPad's inventory (DeviceInformation, SecurityInfo,
    ProfileList, CertificateList, InstalledApplicationList) and, when it has turned declarative
    management on, of its latest status report, so rules see what a real answer holds.

The server cannot tell a fleet iPad from an enrolled one: it checks in with its own certificate.
"""
from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, select, text

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import FileKey
from ipad_mdm.db import utcnow
from mdm import Device, IdentityCertificate

_INVENTORY = ("device_information", "security_info", "profile_list", "certificate_list", "installed_applications",
              "ddm_status")
_COPIED = ("os_version", "build_version", "model", "model_name", "product_name", "is_supervised", "topic", "unit_id")


@dataclass
class FleetDevice:
    udid: str
    certificate: x509.Certificate
    key: object

    def sign(self, body: bytes) -> str:
        return base64.b64encode(cms.sign(body, self.certificate, FileKey(self.key), detached=True)).decode()


def add_fleet(inst, n: int, key, *, like_udid: str, batch: int = 1000, without_passcode_every: int = 0) -> list[FleetDevice]:
    """Record `n` enrolled iPads like the enrolled iPad `like_udid`; returns them with their identities.
    `without_passcode_every`: every so many of them report no passcode (SecurityInfo and status report),
    as some iPads do when they are handed over: a policy's first evaluation finds them failing."""
    public = key.public_key()
    out: list[FleetDevice] = []
    with inst.database.session() as s:
        model = s.scalar(select(Device).where(Device.udid == like_udid))
        template = {a: getattr(model, a) for a in _INVENTORY + _COPIED}
        ddm_enabled = model.ddm_enabled_at is not None
    unlocked = _without_passcode(template)
    for start in range(0, n, batch):
        now = utcnow()
        chunk = []
        for _ in range(start, min(n, start + batch)):
            udid = str(uuid.uuid4()).upper()
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, udid)])
            chunk.append(FleetDevice(udid, inst.ca.issue_device_identity(subject, public, 365), key))
        with inst.database.session() as s:
            s.execute(insert(Device), [dict(
                udid=d.udid, serial_number="F" + secrets.token_hex(5).upper(), enrollment_state="enrolled",
                push_token=secrets.token_hex(32), push_magic=str(uuid.uuid4()).upper(), enrolled_at=now,
                token_updated_at=now, last_seen_at=now, push_pending=False, push_failures=0,
                awaiting_configuration=False, lost_mode_enabled=False, device_name="iPad",
                **{a: template[a] for a in _COPIED},
                **{a: (unlocked if without_passcode_every and (start + i) % without_passcode_every == 0 else template)[a]
                   for a in _INVENTORY}, **{f"{a}_at": now for a in _INVENTORY},
                ddm_enabled_at=now if ddm_enabled else None,
            ) for i, d in enumerate(chunk)])
            ids = dict(s.execute(select(Device.udid, Device.id).where(Device.udid.in_([d.udid for d in chunk]))).all())
            s.execute(insert(IdentityCertificate), [dict(
                serial=format(d.certificate.serial_number, "x"),
                sha256_fingerprint=d.certificate.fingerprint(hashes.SHA256()).hex(),
                subject=d.certificate.subject.rfc4514_string(), not_before=d.certificate.not_valid_before_utc,
                not_after=d.certificate.not_valid_after_utc,
                der=d.certificate.public_bytes(serialization.Encoding.DER), device_id=ids[d.udid], issued_at=now,
            ) for d in chunk])
            s.execute(text("UPDATE devices SET current_identity_id = (SELECT max(i.id) FROM identity_certificates i "
                           "WHERE i.device_id = devices.id) WHERE current_identity_id IS NULL AND id >= :lo"),
                      {"lo": min(ids.values())})
        out.extend(chunk)
    return out


def _without_passcode(template: dict) -> dict:
    out = dict(template)
    if isinstance(out["security_info"], dict):
        out["security_info"] = {**out["security_info"], "PasscodePresent": False}
    status = out["ddm_status"]
    if isinstance(status, dict) and isinstance(status.get("passcode.is-present"), dict):
        out["ddm_status"] = {**status, "passcode.is-present": {**status["passcode.is-present"], "value": False}}
    return out


def count_enrolled(inst) -> int:
    from sqlalchemy import func

    with inst.database.session() as s:
        return s.scalar(select(func.count()).select_from(Device).where(Device.enrollment_state == "enrolled"))



def add_peers(inst, udids: list[str], *, batch: int = 2000) -> int:
    """Active WireGuard peers for these iPads, as provisioning would record them (own keys, preshared
    key, an address from the pool), inserted in bulk: the gateway config then holds the whole fleet."""
    import ipaddress

    from vpn.keys import generate_keypair, generate_psk
    from vpn.models import WireGuardPeer
    from vpn.settings import vpn_settings

    vs = vpn_settings(inst)
    fernet = inst.fernet()
    with inst.database.session() as s:
        used = {int(ipaddress.IPv4Address(a)) for a in s.scalars(select(WireGuardPeer.address_v4)) if a}
        ids = dict(s.execute(select(Device.udid, Device.id).where(Device.udid.in_(udids))).all())
    free = (a for a in range(int(vs.network.network_address) + 2, int(vs.network.broadcast_address)) if a not in used)
    made = 0
    for start in range(0, len(udids), batch):
        now = utcnow()
        rows = []
        for udid in udids[start:start + batch]:
            private, public = generate_keypair()
            rows.append(dict(device_id=ids[udid], public_key=public, state="active", created_at=now, updated_at=now,
                             private_key_enc=fernet.encrypt(private.encode()).decode(),
                             preshared_key_enc=fernet.encrypt(generate_psk().encode()).decode(),
                             address_v4=str(ipaddress.IPv4Address(next(free)))))
        with inst.database.session() as s:
            s.execute(insert(WireGuardPeer), rows)
        made += len(rows)
    return made


def wait_provisioned(database_url: str, timeout: float = 300) -> float:
    """Until the workers have provisioned every new enrollment over the protocol (mdm.provisioning: the
    VPN peer and profile, the first verdict, ...) and each has its verdict; returns the seconds waited.
    (The fleet's directly made devices have no enrollment_completed_at, and no verdict until the
    compliance run the bench times.)"""
    import time

    from sqlalchemy import create_engine

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    t0 = time.perf_counter()
    try:
        with engine.connect() as conn:
            while True:
                pending, unjudged = conn.execute(text(
                    "SELECT count(*) FILTER (WHERE provision_pending), count(*) FILTER (WHERE "
                    "enrollment_completed_at IS NOT NULL AND NOT EXISTS ("
                    "SELECT 1 FROM compliance_device_verdicts v WHERE v.device_id = devices.id)) "
                    "FROM devices WHERE enrollment_state = 'enrolled'")).one()
                conn.rollback()
                if not pending and not unjudged:
                    return time.perf_counter() - t0
                if time.perf_counter() - t0 > timeout:
                    raise SystemExit(f"bench: {pending} enrollment(s) still to provision, {unjudged} without a verdict")
                time.sleep(0.05)
    finally:
        engine.dispose()
