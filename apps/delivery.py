"""Getting the wanted release onto each iPad and knowing where it stands.

MDM path: `InstallApplication` (ManifestURL for an in-house app, iTunesStoreID for a store app,
ManagementFlags 1, the managed configuration rendered for the device), then ManagedApplicationList
and InstalledApplicationList to confirm. Progress per device: pending (queued) → installing
(the iPad accepted the command) → installed (it reports the release's version) | failed (Apple's
error). The manifest and the .ipa are served at unguessable per-release URLs.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import plistlib
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.models import Unit
from mdm import Command, Device, commands as command_queue

from .models import App, AppDeployment, AppRelease
from .service import wanted_release

log = logging.getLogger(__name__)
VARIABLE = re.compile(r"\$\{([a-z_]+)\}")
VARIABLES = ("udid", "serial", "device_name", "unit_code", "unit_name", "leader_name", "gateway_url")
FAILED_STATES = ("Failed", "UserRejected", "UpdateRejected", "ManagementRejected", "ManagedButUninstalled")


def release_token(instance, release: AppRelease) -> str:
    return hmac.new(instance.app_secret, f"app-release:{release.id}:{release.ipa_sha256}".encode(),
                    hashlib.sha256).hexdigest()[:32]


def manifest_url(instance, release: AppRelease) -> str:
    return f"{instance.settings.base_url.rstrip('/')}/apps/{release.id}/{release_token(instance, release)}/manifest.plist"


def manifest(instance, release: AppRelease) -> bytes:
    base = f"{instance.settings.base_url.rstrip('/')}/apps/{release.id}/{release_token(instance, release)}"
    return plistlib.dumps({"items": [{
        "assets": [{"kind": "software-package", "url": f"{base}/app.ipa"}],
        "metadata": {"bundle-identifier": release.app.bundle_id, "bundle-version": release.version,
                     "kind": "software", "title": release.app.name},
    }]})


def device_values(session: Session, instance, device: Device) -> dict[str, str]:
    unit = session.get(Unit, device.unit_id) if device.unit_id else None
    leader = ""
    try:
        from document_gateway import service as gateway

        row = gateway.current_assignment(session, device.id)
        leader = row.leader.full_name if row is not None and getattr(row, "leader", None) else ""
    except Exception:  # the gateway may be absent in a trimmed deployment: the variable stays empty
        log.debug("no leader for %s", device.udid)
    return {"udid": device.udid, "serial": device.serial_number or "", "device_name": device.device_name or "",
            "unit_code": unit.code if unit else "", "unit_name": unit.name_vi if unit else "", "leader_name": leader,
            "gateway_url": f"{instance.settings.base_url.rstrip('/')}/docs/"}


def render(value, values: dict[str, str]):
    """${variable} in every string of the configuration, replaced for this device."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: render(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, values) for v in value]
    return value


def install_params(session: Session, instance, device: Device, app: App, release: AppRelease) -> dict:
    params: dict = {"ManagementFlags": 1}
    if app.kind == "inhouse":
        params["ManifestURL"] = manifest_url(instance, release)
    else:
        params["iTunesStoreID"] = int(app.app_store_id)
    if app.configuration:
        params["Configuration"] = render(app.configuration, device_values(session, instance, device))
    return params


APP_MANAGED = "com.apple.configuration.app.managed"


def declaration_id(bundle_id: str) -> str:
    ident = f"vn.gov.ipadmdm.app.{bundle_id}"
    return ident if len(ident) <= 64 else "vn.gov.ipadmdm.app." + hashlib.sha256(bundle_id.encode()).hexdigest()[:32]


def uses_declarations(device: Device) -> bool:
    """iPads on declarative management that support app.managed (iPadOS 17.2+) get their apps by
    declaration; the others by InstallApplication."""
    from declarative import sync as ddm_sync

    if device.ddm_enabled_at is None:
        return False
    supported = ddm_sync.supported_types(device)
    if supported is not None:
        return APP_MANAGED in supported
    return ddm_sync.os_at_least(device.os_version, "17.2")


def _unit_stage(session: Session, device: Device) -> str | None:
    return session.scalar(select(Unit.stage).where(Unit.id == device.unit_id)) if device.unit_id else None


def declarations_for(session: Session, device: Device, instance) -> list[tuple[str, str, dict]]:
    """The app.managed configurations of one iPad (declarative.sync asks every contributor)."""
    if device.enrollment_state != "enrolled" or not uses_declarations(device):
        return []
    stage = _unit_stage(session, device)
    out = []
    for app in session.scalars(select(App).order_by(App.id)):
        want = wanted_release(app, stage)
        if want is None:
            continue
        payload: dict = {"InstallBehavior": {"Install": "Required"}}
        if app.kind == "inhouse":
            payload.update(BundleID=app.bundle_id, ManifestURL=manifest_url(instance, want))
        else:
            payload.update(AppStoreID=app.app_store_id, BundleID=app.bundle_id)
        out.append((APP_MANAGED, declaration_id(app.bundle_id), payload))
    return out


def _deployment(session: Session, device_id: int, app_id: int) -> AppDeployment | None:
    return session.scalar(select(AppDeployment).where(AppDeployment.device_id == device_id,
                                                      AppDeployment.app_id == app_id))


def all_apps(session: Session) -> list[App]:
    return list(session.scalars(select(App).order_by(App.id)))


def reconcile_device(session: Session, instance, device: Device, apps: list[App] | None = None,
                     *, requested_by: str = "apps") -> bool:
    """Queue what this iPad lacks; True when a command was queued (push after commit)."""
    if device.enrollment_state != "enrolled":
        return False
    apps = apps if apps is not None else all_apps(session)
    stage = _unit_stage(session, device)
    by_declaration = uses_declarations(device)
    queued = False
    for app in apps:
        want = wanted_release(app, stage)
        if want is None:
            continue
        dep = _deployment(session, device.id, app.id)
        if dep is not None and dep.release_id == want.id and dep.status != "failed":
            continue
        if dep is not None and dep.release_id == want.id and dep.attempts >= 3:
            continue  # failed three times: left for IT (the console shows Apple's error)
        if by_declaration:
            cmd = _sync_declarations(session, instance, device, app, want, requested_by)
        else:
            cmd = command_queue.enqueue(session, device, "InstallApplication",
                                        install_params(session, instance, device, app, want), requested_by=requested_by)
        if dep is None:
            dep = AppDeployment(device_id=device.id, app_id=app.id, release_id=want.id, attempts=0)
            session.add(dep)
        if dep.release_id != want.id:
            dep.attempts = 0
        dep.release_id, dep.status, dep.command_uuid, dep.error = want.id, "pending", cmd.uuid if cmd else None, None
        dep.attempts += 1
        dep.updated_at = utcnow()
        queued = True
    session.flush()
    return queued


def _sync_declarations(session: Session, instance, device: Device, app: App, release: AppRelease,
                       requested_by: str):
    """DDM path: the app.managed declaration changed, so tell the iPad to sync; the managed
    configuration still goes by the Settings command (ApplicationConfiguration)."""
    from declarative import sync as ddm_sync

    ddm_sync.request_sync(session, [device], ddm_sync.renderer_for(instance), requested_by=requested_by)
    if app.configuration:
        config = render(app.configuration, device_values(session, instance, device))
        command_queue.enqueue(session, device, "Settings", {"Settings": [{
            "Item": "ApplicationConfiguration", "Identifier": app.bundle_id, "Configuration": config}]},
            requested_by=requested_by)
    return None


def on_status(session: Session, device: Device, report, changed) -> None:
    """app.managed.list from a declarative status report: installed at the release's version, or failed."""
    if "app.managed.list" not in changed:
        return
    from mdm import ddm

    listed = {e.get("identifier"): e for e in ddm.status_value(device.ddm_status, "app.managed.list") or []
              if isinstance(e, dict)}
    for dep, app in _deployments(session, device):
        entry = listed.get(app.bundle_id)
        if entry is None:
            continue
        release = session.get(AppRelease, dep.release_id)
        dep.installed_version = str(entry.get("short-version") or "")[:32] or None
        state = entry.get("state")
        if state == "managed" and dep.installed_version == release.version:
            dep.status, dep.error = "installed", None
        elif state == "failed":
            dep.status, dep.error = "failed", "app.managed: " + _declaration_reasons(device, app.bundle_id)
        elif state in ("queued", "downloading", "installing", "prompting-for-management"):
            dep.status = "installing"
        dep.updated_at = utcnow()


def _declaration_reasons(device: Device, bundle_id: str) -> str:
    """The reason codes the iPad gives for its app.managed declaration (management.declarations)."""
    from mdm import ddm

    ident = declaration_id(bundle_id)
    reported = ddm.status_value(device.ddm_status, "management.declarations") or {}
    for entry in reported.get("configurations", []):
        if isinstance(entry, dict) and entry.get("identifier") == ident:
            codes = [str(r.get("code")) for r in entry.get("reasons") or [] if isinstance(r, dict)]
            return ", ".join(codes)[:480] or "failed"
    return "failed"


INLINE_LIMIT = 100
ROLLOUT_TASK = "apps.rollout"


def rollout(session: Session, instance, *, requested_by: str) -> dict:
    """After a release change: reconcile every enrolled iPad here when few, else in the background
    task (Celery in production) after commit. Returns {"devices_queued": n} or {"rollout": "queued"}."""
    from sqlalchemy import func

    from ipad_mdm.db import after_commit
    from ipad_mdm.dispatch import push_after_commit

    n = session.scalar(select(func.count()).select_from(Device).where(Device.enrollment_state == "enrolled"))
    if n <= INLINE_LIMIT:
        push = reconcile_all(session, instance, requested_by=requested_by)
        push_after_commit(session, push)
        return {"devices_queued": len(push)}
    dispatcher = session.info.get("dispatcher")
    if dispatcher is not None:
        after_commit(session, lambda: dispatcher.submit(ROLLOUT_TASK, requested_by))
    return {"devices_queued": None, "rollout": "queued", "devices": n}


def reconcile_all(session: Session, instance, *, requested_by: str = "apps") -> list[int]:
    apps = list(session.scalars(select(App).order_by(App.id)))
    push = []
    for device in session.scalars(select(Device).where(Device.enrollment_state == "enrolled").order_by(Device.id)):
        if reconcile_device(session, instance, device, apps, requested_by=requested_by):
            push.append(device.id)
    return push


def _confirm(session: Session, device: Device, bundle_id: str) -> None:
    """Ask the iPad what it now has (one queued request each is enough)."""
    for request_type, params in (("ManagedApplicationList", {"Identifiers": [bundle_id]}),
                                 ("InstalledApplicationList", None)):
        waiting = session.scalar(select(Command.id).where(Command.device_id == device.id,
                                                          Command.request_type == request_type,
                                                          Command.status.in_(("queued", "notnow"))).limit(1))
        if waiting is None:
            command_queue.enqueue(session, device, request_type, params, requested_by="apps.verify")


def on_command_completed(session: Session, device: Device, command: Command) -> None:
    if command.request_type == "InstallApplication":
        dep = session.scalar(select(AppDeployment).where(AppDeployment.device_id == device.id,
                                                         AppDeployment.command_uuid == command.uuid))
        if dep is None:
            return
        dep.updated_at = utcnow()
        if command.status == "acknowledged":
            dep.status = "installing"
            _confirm(session, device, session.get(App, dep.app_id).bundle_id)
        else:
            first = (command.error_chain or [{}])[0]
            dep.status = "failed"
            dep.error = (f"{first.get('ErrorDomain', '')} {first.get('ErrorCode', '')}: "
                         f"{first.get('LocalizedDescription', '')}").strip()[:500]
            log.warning("InstallApplication on %s failed: %s", device.udid, dep.error)
    elif command.request_type == "ManagedApplicationList" and command.status == "acknowledged":
        listed = (command.result or {}).get("ManagedApplicationList") or {}
        for dep, app in _deployments(session, device):
            status = (listed.get(app.bundle_id) or {}).get("Status") if isinstance(listed, dict) else None
            if status in FAILED_STATES and dep.status != "installed":
                dep.status, dep.error, dep.updated_at = "failed", f"ManagedApplicationList: {status}", utcnow()


def _deployments(session: Session, device: Device):
    return session.execute(select(AppDeployment, App).join(App, App.id == AppDeployment.app_id)
                           .where(AppDeployment.device_id == device.id)).all()


def on_inventory(session: Session, device: Device, kind: str, **_) -> None:
    """InstalledApplicationList: an iPad reporting the release's version has it installed."""
    if kind != "InstalledApplicationList":
        return
    installed = {a.get("Identifier"): a for a in device.installed_applications or [] if isinstance(a, dict)}
    for dep, app in _deployments(session, device):
        entry = installed.get(app.bundle_id)
        if entry is None:
            continue
        dep.installed_version = str(entry.get("ShortVersion") or entry.get("Version") or "")[:32] or None
        release = session.get(AppRelease, dep.release_id)
        if dep.installed_version == release.version and dep.status != "installed":
            dep.status, dep.error, dep.updated_at = "installed", None, utcnow()


def progress(session: Session, app: App) -> dict:
    rows = session.execute(select(AppDeployment, Device.udid, Device.unit_id, AppRelease.version)
                           .join(Device, Device.id == AppDeployment.device_id)
                           .join(AppRelease, AppRelease.id == AppDeployment.release_id)
                           .where(AppDeployment.app_id == app.id).order_by(Device.udid)).all()
    units = {u.id: u.code for u in session.scalars(select(Unit))}
    per_unit: dict[str, dict] = {}
    devices = []
    for dep, udid, unit_id, version in rows:
        code = units.get(unit_id, "")
        per_unit.setdefault(code, {"pending": 0, "installing": 0, "installed": 0, "failed": 0})[dep.status] += 1
        devices.append({"udid": udid, "unit": code, "release": version, "status": dep.status,
                        "installed_version": dep.installed_version, "error": dep.error,
                        "updated_at": dep.updated_at.isoformat()})
    return {"bundle_id": app.bundle_id, "units": per_unit, "devices": devices}
