"""Server tokens, device sync and enrollment profiles at Apple.

  add_token       decrypt a .p7m, check it with Apple (/session, /account), store it sealed
  sync            first a full fetch (/server/devices, paged by cursor), then /devices/sync from the
                  cursor; a cursor Apple no longer accepts (expired, invalid, another token's) starts a
                  full fetch again. New serials are announced (hook ade.devices_synced: the console
                  registers them in the handover workflow) and get the token's profile.
  define_profile  the enrollment profile at Apple (url = this server's /mdm/ade/enroll, supervised,
                  mandatory, await_device_configured, Vietnamese), assigned to the token's iPads
  expiry_warnings 30, 14 and 7 days before a token expires: a security event and an e-mail, once each
"""
from __future__ import annotations

import datetime as dt
import logging
import os

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.timefmt import warning_threshold

from . import token as tokens
from .client import AppleError, CursorError, DepClient
from .models import AdeDevice, AdeProfile, AdeToken

log = logging.getLogger("ade")

WARN_DAYS = (30, 14, 7)
SKIP_SETUP_ITEMS = ["AppleID", "Siri", "Diagnostics", "Privacy", "iCloudStorage", "iCloudDiagnostics", "Payment",
                    "ScreenTime", "TOS", "Restore", "Android", "WatchMigration", "Welcome", "TapToSetup",
                    "UpdateCompleted", "Appearance", "Safety", "Keyboard", "Zoom", "DeviceToDeviceMigration"]


class AdeError(ValueError):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


def apple_settings(settings) -> dict:
    """Where Apple's API is (tests: the local stand-in) and which CA bundle to trust for it."""
    import ssl

    ca = settings.extra.get("ade_ca") or os.environ.get("IPAD_MDM_ADE_CA")
    return {"base_url": settings.extra.get("ade_url") or os.environ.get("IPAD_MDM_ADE_URL") or None,
            "verify": ssl.create_default_context(cafile=ca) if ca else True}


APPLE_DEVICE_CA = os.path.join(os.path.dirname(__file__), "apple_iphone_device_ca.pem")


def device_ca_file(settings) -> str:
    """PEM bundle of the CAs machine information must chain to: Apple's "Apple iPhone Device CA"
    (published by Apple for exactly this check; its validity ended in 2014 but Apple still issues
    device certificates under it, so only the signature is checked), unless configured otherwise."""
    return settings.extra.get("ade_device_ca") or os.environ.get("IPAD_MDM_ADE_DEVICE_CA") or APPLE_DEVICE_CA


def client_for(inst, row: AdeToken) -> DepClient:
    creds = tokens.ServerToken.unseal(inst.fernet(), row.credentials_enc, row.access_token_expiry)
    if row.access_token_expiry <= utcnow():
        raise AdeError("token_expired", "the server token has expired; upload a new one from Apple Business Manager")
    return DepClient(creds, **apple_settings(inst.settings))


def tokens_with_counts(session: Session) -> list[dict]:
    """Every token (token_dict) with the number of iPads ABM assigns to it now: the API and the console."""
    counts = dict(session.execute(select(AdeDevice.token_id, func.count()).where(AdeDevice.removed_at.is_(None))
                                  .group_by(AdeDevice.token_id)).all())
    return [token_dict(row, devices=counts.get(row.id, 0)) for row in session.scalars(select(AdeToken).order_by(AdeToken.id))]


def token_dict(row: AdeToken, now: dt.datetime | None = None, *, devices: int | None = None) -> dict:
    days = (row.access_token_expiry - (now or utcnow())).days
    return {"id": row.id, "server_name": row.server_name, "org_name": row.org_name,
            "expires_at": row.access_token_expiry.isoformat(), "days_left": days,
            "warning": days <= WARN_DAYS[0], "expired": days < 0,
            "last_sync_at": row.last_sync_at.isoformat() if row.last_sync_at else None, "last_error": row.last_error,
            "profile_uuid": row.profile_uuid,
            "devices": devices}


def add_token(session: Session, inst, data: bytes, *, by: str) -> AdeToken:
    cert, key = tokens.keypair(inst.settings.instance_dir)
    try:
        creds = tokens.decrypt(data, cert, key)
    except tokens.TokenError as exc:
        raise AdeError(exc.code, str(exc)) from None
    client = DepClient(creds, **apple_settings(inst.settings))
    try:
        account = client.account()  # proves the credentials before anything is stored
    except AppleError as exc:
        raise AdeError("apple_refused", f"Apple refused the token: {exc.code}", 409 if exc.status else 502) from None
    finally:
        client.close()
    row = session.scalar(select(AdeToken).where(AdeToken.consumer_key == creds.consumer_key))
    if row is None:
        row = AdeToken(consumer_key=creds.consumer_key)
        session.add(row)
    elif row.server_uuid and account.get("server_uuid") and row.server_uuid != account["server_uuid"]:
        raise AdeError("token_conflict", "this token's key belongs to another MDM server in ABM", 409)
    row.credentials_enc = creds.sealed(inst.fernet())
    row.access_token_expiry = creds.expires_at
    row.server_name = str(account.get("server_name") or "")[:255]
    row.server_uuid = str(account.get("server_uuid") or "")[:64]
    row.org_name = str(account.get("org_name") or "")[:255]
    row.created_by = by[:128]
    row.warned_days = None
    session.flush()
    log.info("ABM server token %s (%s, %s) stored by %s; expires %s", row.id, row.server_name, row.org_name, by,
             row.access_token_expiry.date())
    return row


# ------------------------------------------------------------------ sync
def sync(session: Session, inst, hooks, row: AdeToken) -> dict:
    client = client_for(inst, row)
    seen: list[dict] = []
    try:
        try:
            full = row.cursor is None
            seen, cursor = (_fetch_all(client) if full else _sync_from(client, row.cursor))
        except CursorError as exc:
            log.warning("ABM token %s: cursor refused (%s); fetching every device again", row.id, exc.code)
            full = True
            seen, cursor = _fetch_all(client)
    except AppleError as exc:
        row.last_error = f"{exc.code} ({exc.status})"[:300]
        raise AdeError("apple_refused", f"Apple refused the sync: {exc.code}", 502) from None
    finally:
        client.close()
    now = utcnow()
    added = _store(session, row, seen, now)
    row.cursor, row.last_sync_at, row.last_error = cursor, now, None
    if full:
        row.fetched_all_at = now
    session.flush()
    if added:
        hooks.emit("ade.devices_synced", session=session, devices=added)
    assigned = {}
    if row.profile_uuid and added:
        assigned = assign(session, inst, row, [d["serial_number"] for d in added])
    return {"fetched": len(seen), "added": len(added), "full": full, "assigned": assigned}


def _pages(call, cursor: str | None) -> tuple[list[dict], str | None]:
    devices = []
    while True:
        page = call(cursor)
        devices += page.get("devices") or []
        cursor = page.get("cursor") or cursor
        if not page.get("more_to_follow"):
            return devices, cursor


def _fetch_all(client: DepClient) -> tuple[list[dict], str | None]:
    return _pages(client.fetch_devices, None)


def _sync_from(client: DepClient, cursor: str) -> tuple[list[dict], str]:
    return _pages(client.sync_devices, cursor)


def _store(session: Session, row: AdeToken, devices: list[dict], now) -> list[dict]:
    added = []
    for d in devices:
        serial = str(d.get("serial_number") or "").strip().upper()[:64]
        if not serial:
            continue
        dev = session.scalar(select(AdeDevice).where(AdeDevice.serial_number == serial))
        deleted = d.get("op_type") == "deleted"
        if dev is None:
            if deleted:
                continue
            dev = AdeDevice(token_id=row.id, serial_number=serial)
            session.add(dev)
            added.append({"serial_number": serial, "model": str(d.get("model") or "")[:128]})
        for field, size in (("model", 128), ("description", 255), ("color", 64), ("asset_tag", 128), ("os", 32),
                            ("device_family", 32), ("profile_status", 32)):
            if d.get(field) is not None:
                setattr(dev, field, str(d[field])[:size])
        if d.get("profile_uuid"):
            dev.profile_uuid = str(d["profile_uuid"])[:64]
        dev.token_id, dev.op_type, dev.synced_at = row.id, str(d.get("op_type") or "added")[:16], now
        dev.removed_at = now if deleted else None
    session.flush()
    return added


# ------------------------------------------------------------------ profiles
def profile_definition(settings, *, department: str, support_phone: str, support_email: str) -> dict:
    return {"profile_name": "Văn phòng Chính phủ — iPad lãnh đạo", "url": f"{settings.base_url}/mdm/ade/enroll",
            "is_supervised": True, "is_mandatory": True, "is_mdm_removable": False, "await_device_configured": True,
            "allow_pairing": False, "auto_advance_setup": False, "department": department[:255],
            "support_phone_number": support_phone[:64], "support_email_address": support_email[:255],
            "language": "vi", "region": "VN", "org_magic": settings.org_identifier,
            "skip_setup_items": SKIP_SETUP_ITEMS, "anchor_certs": [], "supervising_host_certs": []}


def define_profile(session: Session, inst, row: AdeToken, *, department: str, support_phone: str,
                   support_email: str, by: str) -> dict:
    for value, field in ((department, "department"), (support_phone, "support_phone"), (support_email, "support_email")):
        if not isinstance(value, str) or not value.strip():
            raise AdeError("invalid_profile", f"{field} is required")
    definition = profile_definition(inst.settings, department=department, support_phone=support_phone,
                                    support_email=support_email)
    client = client_for(inst, row)
    try:
        answer = client.define_profile(definition)
    except AppleError as exc:
        raise AdeError("apple_refused", f"Apple refused the profile: {exc.code}", 502) from None
    finally:
        client.close()
    uuid = str(answer.get("profile_uuid") or "")
    if not uuid:
        raise AdeError("apple_refused", "Apple answered without a profile_uuid", 502)
    session.add(AdeProfile(token_id=row.id, profile_uuid=uuid[:64], definition=definition, created_by=by[:128]))
    row.profile_uuid = uuid[:64]
    session.flush()
    serials = list(session.scalars(select(AdeDevice.serial_number).where(AdeDevice.token_id == row.id,
                                                                         AdeDevice.removed_at.is_(None))))
    return {"profile_uuid": uuid, "assigned": assign(session, inst, row, serials) if serials else {}}


def assign(session: Session, inst, row: AdeToken, serials: list[str]) -> dict:
    client = client_for(inst, row)
    try:
        answer = client.assign_profile(row.profile_uuid, serials)
    except AppleError as exc:
        row.last_error = f"assign: {exc.code}"[:300]
        log.warning("ABM token %s: assigning the profile failed: %s", row.id, exc.code)
        return {"error": exc.code}
    finally:
        client.close()
    results = answer.get("devices") or {}
    for dev in session.scalars(select(AdeDevice).where(AdeDevice.serial_number.in_(list(results)))):
        if results.get(dev.serial_number) == "SUCCESS":
            dev.profile_uuid, dev.profile_status = row.profile_uuid, "assigned"
    return results


def _synced(session: Session, serials: list[str]) -> list[AdeDevice]:
    rows = session.scalars(select(AdeDevice).where(AdeDevice.serial_number.in_([x.upper() for x in serials]))).all()
    if not rows:
        raise AdeError("device_not_found", "none of these serial numbers was synced from ABM", 404)
    return rows


def unassign(session: Session, inst, serials: list[str]) -> dict:
    """Remove the enrollment profile from these iPads at Apple (they will not enroll here by ADE)."""
    rows = _synced(session, serials)
    results: dict = {}
    for token_id in {r.token_id for r in rows}:
        mine = [r for r in rows if r.token_id == token_id]
        client = client_for(inst, session.get(AdeToken, token_id))
        try:
            results.update(client.remove_profile([r.serial_number for r in mine]).get("devices") or {})
        except AppleError as exc:
            raise AdeError("apple_refused", f"Apple refused: {exc.code}", 502) from None
        finally:
            client.close()
        for r in mine:
            if results.get(r.serial_number) == "SUCCESS":
                r.profile_uuid, r.profile_status = None, "removed"
    return results


def assign_serials(session: Session, inst, serials: list[str]) -> dict:
    """(Re)assign the token's profile to these synced iPads."""
    rows = _synced(session, serials)
    results: dict = {}
    for token_id in {r.token_id for r in rows}:
        row = session.get(AdeToken, token_id)
        if not row.profile_uuid:
            raise AdeError("no_profile", "define the enrollment profile first", 409)
        results.update(assign(session, inst, row, [r.serial_number for r in rows if r.token_id == token_id]))
    return results


# ------------------------------------------------------------------ expiry
def expiry_warnings(session: Session, now: dt.datetime | None = None) -> list[tuple[AdeToken, int]]:
    """Tokens that crossed a warning threshold since the last warning: (token, days left)."""
    now = now or utcnow()
    due = []
    for row in session.scalars(select(AdeToken)):
        days = (row.access_token_expiry - now).days
        threshold = warning_threshold(days, WARN_DAYS, row.warned_days)
        if threshold is not None:
            row.warned_days = threshold
            due.append((row, days))
    return due


def known_serial(session: Session, serial: str) -> AdeDevice | None:
    return session.scalar(select(AdeDevice).where(AdeDevice.serial_number == serial.strip().upper(),
                                                  AdeDevice.removed_at.is_(None)))

