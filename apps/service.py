"""The app catalog and its releases: create, upload, accept, pause, resume, withdraw (roll back).

Which release an iPad should have is decided here (`wanted_release`): the newest release that is
accepted, or, for an iPad of a pilot unit, the newest one still in its pilot; a paused release
goes to nobody new; a withdrawn one to nobody. Takes an open session, never commits.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ipad_mdm.db import utcnow
from ipad_mdm.files import private_dir, write_atomic

from .ipa import IpaError, IpaInfo, read_ipa, version_key
from .models import App, AppRelease

log = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 1024 ** 3


def max_upload_bytes() -> int:
    """IPAD_MDM_APP_MAX_BYTES: the largest .ipa accepted (default 1 GiB), read per upload."""
    raw = os.environ.get("IPAD_MDM_APP_MAX_BYTES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_BYTES


BUNDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,154}$")


class AppError(ValueError):
    """A request the catalog refuses: `status` 400 / 404 / 409."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid"):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def app_dir(instance) -> Path:
    return private_dir(instance.settings.instance_dir / "apps")


def ipa_path(instance, release: AppRelease) -> Path:
    return app_dir(instance) / f"{release.ipa_sha256}.ipa"


def get_app(session: Session, bundle_id: str) -> App:
    app = session.scalar(select(App).where(App.bundle_id == bundle_id)) if isinstance(bundle_id, str) else None
    if app is None:
        raise AppError(f"unknown app {str(bundle_id)[:155]!r}", 404, "unknown_app")
    return app


def get_release(app: App, version: str) -> AppRelease:
    for r in app.releases:
        if r.version == version:
            return r
    raise AppError(f"{app.bundle_id} has no release {str(version)[:32]!r}", 404, "unknown_release")


def create_app(session: Session, *, bundle_id, name, kind, app_store_id=None, configuration=None,
               created_by: str = "") -> App:
    if not isinstance(bundle_id, str) or not BUNDLE_RE.match(bundle_id):
        raise AppError("bundle_id must look like vn.gov.vpcp.vanban")
    if kind not in ("store", "inhouse"):
        raise AppError("kind must be store or inhouse")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 255:
        raise AppError("name must be 1-255 characters")
    if kind == "store" and (not isinstance(app_store_id, str) or not re.fullmatch(r"\d{1,15}", app_store_id)):
        raise AppError("app_store_id must be the App Store's numeric ID (digits only)")
    if configuration is not None and not isinstance(configuration, dict):
        raise AppError("configuration must be a JSON object (the managed app configuration)")
    if session.scalar(select(App.id).where(App.bundle_id == bundle_id)):
        raise AppError(f"{bundle_id} is already in the catalog", 409, "exists")
    app = App(bundle_id=bundle_id, name=name.strip(), kind=kind, app_store_id=app_store_id if kind == "store" else None,
              configuration=configuration, created_by=created_by, created_at=utcnow())
    session.add(app)
    session.flush()
    return app


def _check_newer(app: App, version: str) -> None:
    live = [r for r in app.releases if r.state != "withdrawn"]
    if any(r.version == version for r in app.releases):
        raise AppError(f"{app.bundle_id} {version} was already uploaded", 409, "version_exists")
    if live and version_key(version) <= max(version_key(r.version) for r in live):
        newest = max(live, key=lambda r: version_key(r.version)).version
        raise AppError(f"version {version} is not newer than {newest}", 409, "not_newer")


def add_inhouse_release(session: Session, instance, app: App, upload: Path, *, created_by: str = "") -> AppRelease:
    """Register an uploaded .ipa (already spooled to `upload`) as the app's next release.
    Refused (and the file removed) when it is not an app, its provisioning profile was altered,
    its bundle ID is another app's, or its version is not newer."""
    try:
        if app.kind != "inhouse":
            raise AppError(f"{app.bundle_id} is an App Store app: add a release by version, not a file")
        try:
            info: IpaInfo = read_ipa(upload)
        except IpaError as exc:
            raise AppError(exc.message, 400, exc.code) from None
        if info.bundle_id != app.bundle_id:
            raise AppError(f"the file is {info.bundle_id}, not {app.bundle_id}", 409, "bundle_mismatch")
        _check_newer(app, info.version)
        final = app_dir(instance) / f"{info.sha256}.ipa"
        os.replace(upload, final)
    except BaseException:
        upload.unlink(missing_ok=True)
        raise
    release = AppRelease(version=info.version, build=info.build, state="pilot", ipa_sha256=info.sha256,
                         ipa_size=info.size, team_id=info.team_id, profile_name=info.profile_name,
                         profile_expires_at=info.profile_expires_at, created_by=created_by, created_at=utcnow())
    app.releases.append(release)
    session.flush()
    log.info("%s %s (%s) uploaded by %s; pilot first", app.bundle_id, info.version, info.build, created_by)
    return release


def add_store_release(session: Session, app: App, version, *, created_by: str = "") -> AppRelease:
    if app.kind != "store":
        raise AppError(f"{app.bundle_id} is an in-house app: upload its .ipa")
    if not isinstance(version, str) or not re.fullmatch(r"\d+(\.\d+){0,3}", version):
        raise AppError("version must look like 1.2.3")
    _check_newer(app, version)
    release = AppRelease(version=version, state="pilot", created_by=created_by, created_at=utcnow())
    app.releases.append(release)
    session.flush()
    return release


def accept(session: Session, instance, release: AppRelease, *, by: str, minute: bytes, filename: str,
           notes: str | None = None) -> AppRelease:
    """Record the acceptance (nghiệm thu): the release goes from the pilot units to every unit."""
    if release.state != "pilot":
        raise AppError(f"release {release.version} is {release.state}, not in its pilot", 409, "not_pilot")
    if not minute:
        raise AppError("the acceptance minute (file) is required")
    if notes is not None and len(notes) > 4000:
        raise AppError("notes are longer than 4000 characters")
    digest = hashlib.sha256(minute).hexdigest()
    ext = re.sub(r"[^a-z0-9]", "", Path(filename or "").suffix.lower())[:8] or "bin"
    folder = private_dir(app_dir(instance) / "acceptance")
    write_atomic(folder / f"{digest}.{ext}", minute)
    release.state, release.accepted_by, release.accepted_at = "accepted", by[:128], utcnow()
    release.acceptance_file, release.acceptance_sha256 = f"{digest}.{ext}", digest
    release.acceptance_notes = notes
    session.flush()
    log.info("%s %s accepted by %s", release.app.bundle_id, release.version, by)
    return release


def set_paused(release: AppRelease, paused: bool) -> None:
    if release.state == "withdrawn":
        raise AppError("a withdrawn release cannot be paused or resumed", 409, "withdrawn")
    release.paused = paused


def withdraw(release: AppRelease) -> AppRelease | None:
    """Roll back: the release goes to nobody; iPads return to the previous accepted release."""
    if release.state == "withdrawn":
        raise AppError("the release is already withdrawn", 409, "withdrawn")
    release.state, release.withdrawn_at = "withdrawn", utcnow()
    previous = [r for r in release.app.releases if r.state == "accepted" and r.id != release.id]
    return max(previous, key=lambda r: version_key(r.version)) if previous else None


def wanted_release(app: App, unit_stage: str | None) -> AppRelease | None:
    candidates = [r for r in app.releases if r.state == "accepted" or (r.state == "pilot" and unit_stage == "pilot")]
    candidates = [r for r in candidates if not r.paused]
    return max(candidates, key=lambda r: version_key(r.version)) if candidates else None


def accepted_version(app: App) -> str | None:
    accepted = [r for r in app.releases if r.state == "accepted"]
    return max(accepted, key=lambda r: version_key(r.version)).version if accepted else None
