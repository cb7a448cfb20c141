"""What a device's declaration set is, how it is served, and when a device is told to sync.

The set of one device = the server's own declarations (status subscriptions, server
capabilities) + every declaration assigned to it (device, unit, all) + what those name (an
activation's configurations, a configuration's asset), minus types the device says it does not
support. Each configuration assigned directly gets an activation made by the server (with the
assignment's predicate). Every declaration is rendered for the device (asset URLs, the legacy
profile URL); its ServerToken is a hash of the rendered document, and the DeclarationsToken a hash
of every (kind, identifier, ServerToken) of the set, so both change exactly when content does.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from mdm import Device, commands as command_queue, ddm

from . import catalog
from .models import Declaration, DeclarationAssignment, DeviceSync
from .service import current  # noqa: F401  (views use sync.current)

log = logging.getLogger(__name__)

# What compliance and the reports need from every iPad, reported the moment it changes.
STATUS_SUBSCRIPTIONS = (
    "device.operating-system.version", "device.operating-system.build-version", "passcode.is-present",
    "passcode.is-compliant", "security.certificate.list", "app.managed.list", "softwareupdate.install-state",
    "softwareupdate.pending-version", "softwareupdate.failure-reason", "management.declarations",
    "management.client-capabilities",
)
SUBSCRIPTIONS_ID = catalog.RESERVED_PREFIX + "status-subscriptions"
CAPABILITIES_ID = catalog.RESERVED_PREFIX + "server-capabilities"
ACTIVATION_PREFIX = catalog.RESERVED_PREFIX + "activation."
KIND_KEYS = {"activation": "Activations", "asset": "Assets", "configuration": "Configurations",
             "management": "Management"}
DEFAULT_MIN_OS = "17.0"


@dataclass(frozen=True)
class Rendered:
    kind: str
    type: str
    identifier: str
    server_token: str
    document: dict            # {"Type", "Identifier", "ServerToken", "Payload"}
    declaration_id: int | None = None


@dataclass
class DeviceSet:
    declarations: dict[str, Rendered]
    token: str
    withheld: dict[str, str]   # identifier -> why it is not sent (unsupported type)


def _token(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode()).hexdigest()[:40]


def _render(kind: str, dtype: str, identifier: str, payload: dict, declaration_id=None) -> Rendered:
    token = _token({"Type": dtype, "Identifier": identifier, "Payload": payload})
    doc = {"Type": dtype, "Identifier": identifier, "ServerToken": token, "Payload": payload}
    return Rendered(kind, dtype, identifier, token, doc, declaration_id)


# Other packages add configurations the server makes for a device (the apps package: one
# app.managed per app the iPad should have), registered when the package is imported so every
# process (web, CLI, worker) computes the same set.
# contributor(session, device, instance) -> [(type, identifier, payload)].
CONTRIBUTORS: list = []


def add_contributor(fn) -> None:
    if fn not in CONTRIBUTORS:
        CONTRIBUTORS.append(fn)


def activation_id(configuration: str) -> str:
    ident = ACTIVATION_PREFIX + configuration
    return ident if len(ident) <= 64 else ACTIVATION_PREFIX + hashlib.sha256(configuration.encode()).hexdigest()[:32]


def os_at_least(os_version: str | None, minimum: str) -> bool:
    def parts(v):
        out = []
        for p in (v or "").split(".")[:3]:
            out.append(int(p) if p.isdigit() else 0)
        return tuple(out + [0] * (3 - len(out)))
    return bool(os_version) and parts(os_version) >= parts(minimum)


def applicable_assignments(session: Session, device: Device) -> list[tuple[Declaration, DeclarationAssignment]]:
    conds = [DeclarationAssignment.target_type == "all", DeclarationAssignment.device_id == device.id]
    if device.unit_id is not None:
        conds.append(DeclarationAssignment.unit_id == device.unit_id)
    rows = session.execute(select(Declaration, DeclarationAssignment).join(DeclarationAssignment)
                           .where(or_(*conds)).order_by(Declaration.id, DeclarationAssignment.id))
    return [(d, a) for d, a in rows]


def supported_types(device: Device) -> set[str] | None:
    caps = ddm.status_value(device.ddm_status, "management.client-capabilities")
    try:
        decls = caps["supported-payloads"]["declarations"]
        return {t for k in ("activations", "assets", "configurations", "management") for t in decls.get(k, [])}
    except (TypeError, KeyError, AttributeError):
        return None


class Renderer:
    """Renders stored declarations for one device (URLs on the server's base URL)."""

    def __init__(self, base_url: str, credentials=None):
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials  # callable(session, device, decl, version) -> bytes (asset data)

    def payload(self, session: Session, device: Device, decl: Declaration) -> dict:
        payload = dict(current(decl).payload)
        if decl.type == "com.apple.configuration.legacy":
            payload["ProfileURL"] = f"{self.base_url}/mdm/ddm/profile/{decl.identifier}"
        elif decl.kind == "asset":
            data, ctype = asset_data(session, device, decl, self.credentials)
            ref = {"DataURL": f"{self.base_url}/mdm/ddm/asset/{decl.identifier}", "ContentType": ctype,
                   "Size": len(data), "Hash-SHA-256": hashlib.sha256(data).hexdigest()}
            payload["Reference"] = ref
            payload["Authentication"] = {"Type": "MDM"}
        return payload


def asset_data(session: Session, device: Device, decl: Declaration, credentials) -> tuple[bytes, str]:
    """The bytes behind an asset's DataURL, for this device."""
    import base64

    version = current(decl)
    source = version.source or {}
    if "certificate" in source:
        return source["certificate"].encode(), "application/pem"
    if "instance_ca" in source:
        return credentials.ca_pem(), "application/pem"
    if "data" in source:
        return base64.b64decode(source["data"]), source.get("content_type", "application/octet-stream")
    if "device_identity" in source:
        return credentials.identity_document(session, device, decl, version), "application/json"
    raise LookupError(f"asset {decl.identifier} has no data source")


def device_set(session: Session, device: Device, renderer: Renderer) -> DeviceSet:
    out: dict[str, Rendered] = {}
    withheld: dict[str, str] = {}
    supported = supported_types(device)

    def allowed(dtype: str) -> bool:
        if supported is not None:
            return dtype in supported
        return os_at_least(device.os_version, catalog.TYPES[dtype].ios)

    def add(decl: Declaration) -> bool:
        if decl.identifier in out:
            return True
        if not allowed(decl.type):
            withheld[decl.identifier] = f"{catalog.TYPES[decl.type].short} is not supported by this device"
            return False
        payload = renderer.payload(session, device, decl)
        if catalog.TYPES[decl.type].asset_reference:
            asset = by_identifier(session, payload["CredentialAssetReference"])
            if asset is None or not add(asset):
                withheld[decl.identifier] = "its credential asset cannot be delivered"
                return False
        out[decl.identifier] = _render(decl.kind, decl.type, decl.identifier, payload, decl.id)
        return True

    # The server's own: status subscriptions (activated always) and its capabilities.
    subs = {"StatusItems": [{"Name": n} for n in STATUS_SUBSCRIPTIONS]}
    out[SUBSCRIPTIONS_ID] = _render("configuration", "com.apple.configuration.management.status-subscriptions",
                                    SUBSCRIPTIONS_ID, subs)
    out[CAPABILITIES_ID] = _render("management", "com.apple.management.server-capabilities", CAPABILITIES_ID,
                                   {"Version": "1.0.0", "SupportedFeatures": {}})
    activations: dict[str, tuple[list[str], set]] = {activation_id(SUBSCRIPTIONS_ID): ([SUBSCRIPTIONS_ID], {None})}

    for decl, assignment in applicable_assignments(session, device):
        if decl.kind == "configuration":
            if add(decl):
                configs, predicates = activations.setdefault(activation_id(decl.identifier), ([decl.identifier], set()))
                predicates.add(assignment.predicate)
        elif decl.kind == "activation":
            if not allowed(decl.type):
                withheld[decl.identifier] = "activations are not supported by this device"
                continue
            payload = dict(current(decl).payload)
            kept = [c for c in payload["StandardConfigurations"]
                    if (cfg := by_identifier(session, c)) is not None and add(cfg)]
            if kept:
                payload["StandardConfigurations"] = kept
                out[decl.identifier] = _render("activation", decl.type, decl.identifier, payload, decl.id)
        else:
            add(decl)
    instance = getattr(renderer.credentials, "instance", None)
    for contribute in CONTRIBUTORS if instance is not None else ():
        for dtype, ident, payload in contribute(session, device, instance):
            if not allowed(dtype):
                withheld[ident] = f"{catalog.TYPES[dtype].short} is not supported by this device"
                continue
            out[ident] = _render(catalog.TYPES[dtype].kind, dtype, ident, payload)
            activations.setdefault(activation_id(ident), ([ident], {None}))
    for ident, (configs, predicates) in activations.items():
        payload: dict = {"StandardConfigurations": configs}
        if None not in predicates:
            parts = sorted(p for p in predicates if p)
            payload["Predicate"] = parts[0] if len(parts) == 1 else " OR ".join(f"({p})" for p in parts)
        out[ident] = _render("activation", "com.apple.activation.simple", ident, payload)
    token = _token(sorted((r.kind, r.identifier, r.server_token) for r in out.values()))
    return DeviceSet(out, token, withheld)


def by_identifier(session: Session, identifier: str) -> Declaration | None:
    return session.scalar(select(Declaration).where(Declaration.identifier == identifier))


# ------------------------------------------------------------------ the provider mdm calls
def answer(session: Session, device: Device, endpoint: ddm.Endpoint, renderer: Renderer) -> dict:
    dset = device_set(session, device, renderer)
    if endpoint.name == "tokens":
        return ddm.sync_tokens(dset.token, _served(session, device, dset.token))
    if endpoint.name == "declaration-items":
        _served(session, device, dset.token)
        items = {key: [] for key in KIND_KEYS.values()}
        for r in sorted(dset.declarations.values(), key=lambda r: r.identifier):
            items[KIND_KEYS[r.kind]].append({"Identifier": r.identifier, "ServerToken": r.server_token})
        return {"Declarations": items, "DeclarationsToken": dset.token}
    found = dset.declarations.get(endpoint.identifier)
    if found is None or found.kind != endpoint.kind:
        raise ddm.UnknownDeclaration(f"no {endpoint.kind} declaration {endpoint.identifier!r} for this device")
    return found.document


def _served(session: Session, device: Device, token: str) -> dt.datetime:
    """Record the token served; its Timestamp is when the device's set last changed."""
    row = session.get(DeviceSync, device.id)
    now = utcnow()
    if row is None:
        row = DeviceSync(device_id=device.id)
        session.add(row)
    if row.served_token != token:
        row.served_token, row.served_at = token, now
    return row.served_at or now


# ------------------------------------------------------------------ telling devices to sync
def ddm_min_os(settings) -> str:
    import os

    extra = getattr(settings, "extra", None) or {}
    return str(extra.get("ddm_min_os") or os.environ.get("IPAD_MDM_DDM_MIN_OS") or DEFAULT_MIN_OS)


def uses_ddm(device: Device, settings) -> bool:
    """The server's per-device choice: declarative management on iPadOS new enough for it."""
    return device.ddm_enabled_at is not None or os_at_least(device.os_version, ddm_min_os(settings))


def turn_on(session: Session, device: Device, settings) -> bool:
    """Queue the DeclarativeManagement command that switches DDM on (at enrollment); older iPads
    keep the MDM-command path. Returns whether a command was queued."""
    if not uses_ddm(device, settings) or device.enrollment_state != "enrolled":
        return False
    command_queue.queue(session, device, "DeclarativeManagement", {}, requested_by="declarative:enable")
    return True


def request_sync(session: Session, devices, renderer: Renderer, *, requested_by: str = "declarative",
                 force: bool = False) -> list[int]:
    """Queue a DeclarativeManagement command (Data: the new tokens) for each DDM device whose
    declaration set changed since it was last served. Returns device ids to push after commit."""
    push = []
    for device in devices:
        if device.ddm_enabled_at is None or device.enrollment_state != "enrolled":
            continue
        dset = device_set(session, device, renderer)
        row = session.get(DeviceSync, device.id) or DeviceSync(device_id=device.id)
        if row.device_id and row not in session:
            session.add(row)
        if not force and dset.token in (row.served_token, row.requested_token):
            continue
        now = utcnow()
        data = ddm.dumps(ddm.sync_tokens(dset.token, now))
        command_queue.enqueue(session, device, "DeclarativeManagement", {"Data": data}, requested_by=requested_by)
        row.requested_token, row.requested_at = dset.token, now
        push.append(device.id)
    return push


def devices_for(session: Session, device_ids: list[int] | None) -> list[Device]:
    stmt = select(Device).where(Device.enrollment_state == "enrolled", Device.ddm_enabled_at.is_not(None))
    if device_ids is not None:
        if not device_ids:
            return []
        stmt = stmt.where(Device.id.in_(device_ids))
    return list(session.scalars(stmt.order_by(Device.id)))


def renderer_for(instance) -> Renderer:
    from .credentials import Credentials

    return Renderer(instance.settings.base_url, Credentials(instance))


# Above this many iPads a sync request leaves the operator's request: the sets are computed
# by a background task (Celery in production), in batches.
INLINE_LIMIT = 100
SYNC_TASK = "declarative.sync"


def sync_after_change(session: Session, device_ids: list[int] | None, renderer: Renderer, *, requested_by: str,
                      force: bool = False) -> dict:
    """Tell the reached DDM iPads to sync: here when few, else by SYNC_TASK after commit.
    Returns {"devices_synced": n} or {"devices_synced": None, "sync": "queued", "devices": n}."""
    from sqlalchemy import func

    from ipad_mdm.db import after_commit
    from ipad_mdm.dispatch import push_after_commit

    stmt = select(func.count()).select_from(Device).where(Device.enrollment_state == "enrolled",
                                                         Device.ddm_enabled_at.is_not(None))
    if device_ids is not None:
        if not device_ids:
            return {"devices_synced": 0}
        stmt = stmt.where(Device.id.in_(device_ids))
    from .osupdate import schedule_updates

    push_after_commit(session, schedule_updates(session))  # the MDM-command path of update enforcement
    reach = session.scalar(stmt)
    if reach <= INLINE_LIMIT:
        push = request_sync(session, devices_for(session, device_ids), renderer, requested_by=requested_by, force=force)
        push_after_commit(session, push)
        return {"devices_synced": len(push)}
    dispatcher = session.info.get("dispatcher")
    if dispatcher is not None:
        after_commit(session, lambda: dispatcher.submit(SYNC_TASK, device_ids, requested_by, force))
    log.info("declarative sync of %d iPads queued by %s", reach, requested_by)
    return {"devices_synced": None, "sync": "queued", "devices": reach}
