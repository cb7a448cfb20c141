"""What an in-house app file (.ipa) says about itself: bundle ID, version and build from its
Info.plist, team and expiry from its embedded.mobileprovision (a CMS SignedData whose signature
is verified here). Pure: reads a file on disk, never the whole archive into memory.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import plistlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ipad_mdm.crypto import cms

MAX_PLIST_BYTES = 4 * 1024 * 1024
_APP_DIR = re.compile(r"^Payload/([^/]+\.app)/$")


class IpaError(ValueError):
    """The file is not an app the office can install; `code` says why (for the console)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class IpaInfo:
    bundle_id: str
    version: str           # CFBundleShortVersionString
    build: str             # CFBundleVersion
    name: str
    team_id: str | None
    team_name: str | None
    profile_name: str | None
    profile_expires_at: dt.datetime | None
    sha256: str
    size: int


def _read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > MAX_PLIST_BYTES:
        raise IpaError("too_large", f"{name} is larger than {MAX_PLIST_BYTES} bytes")
    with zf.open(info) as fh:
        return fh.read(MAX_PLIST_BYTES + 1)


def file_digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def read_ipa(path: Path) -> IpaInfo:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise IpaError("not_zip", "the file is not an .ipa (not a zip archive)") from None
    with zf:
        names = zf.namelist()
        apps = sorted({m.group(1) for n in names for m in [re.match(r"^Payload/([^/]+\.app)/", n)] if m})
        if len(apps) != 1:
            raise IpaError("no_app", "the archive has no single Payload/<name>.app folder")
        base = f"Payload/{apps[0]}/"
        if base + "Info.plist" not in names:
            raise IpaError("no_info_plist", "the app has no Info.plist")
        try:
            info = plistlib.loads(_read_member(zf, base + "Info.plist"))
        except (plistlib.InvalidFileException, ValueError, OverflowError):
            raise IpaError("bad_info_plist", "Info.plist cannot be read") from None
        bundle_id, version, build = (info.get("CFBundleIdentifier"), info.get("CFBundleShortVersionString"),
                                     info.get("CFBundleVersion"))
        if not all(isinstance(v, str) and v for v in (bundle_id, version, build)):
            raise IpaError("bad_info_plist", "Info.plist lacks CFBundleIdentifier, CFBundleShortVersionString or "
                           "CFBundleVersion")
        if not re.fullmatch(r"[A-Za-z0-9.\-]{1,155}", bundle_id) or not re.fullmatch(r"\d+(\.\d+){0,3}", version):
            raise IpaError("bad_info_plist", "Info.plist has an invalid bundle ID or version")
        name = info.get("CFBundleDisplayName") or info.get("CFBundleName") or bundle_id
        profile = None
        if base + "embedded.mobileprovision" in names:
            profile = read_provisioning_profile(_read_member(zf, base + "embedded.mobileprovision"))
        elif not names:
            raise IpaError("no_app", "empty archive")
    digest, size = file_digest(path)
    return IpaInfo(bundle_id=bundle_id, version=version, build=build, name=str(name)[:255],
                   team_id=(profile or {}).get("team_id"), team_name=(profile or {}).get("team_name"),
                   profile_name=(profile or {}).get("name"), profile_expires_at=(profile or {}).get("expires_at"),
                   sha256=digest, size=size)


def read_provisioning_profile(der: bytes) -> dict:
    """Verify the profile's CMS signature (a changed byte fails) and read team and expiry."""
    try:
        verified = cms.verify(der)
    except cms.CMSError:
        raise IpaError("bad_profile", "embedded.mobileprovision has an invalid signature (the file was altered)") from None
    try:
        plist = plistlib.loads(verified.content)
    except (plistlib.InvalidFileException, ValueError):
        raise IpaError("bad_profile", "embedded.mobileprovision does not hold a property list") from None
    expires = plist.get("ExpirationDate")
    if not isinstance(expires, dt.datetime):
        raise IpaError("bad_profile", "embedded.mobileprovision has no ExpirationDate")
    teams = plist.get("TeamIdentifier") or []
    return {"team_id": str(teams[0])[:32] if teams else None, "team_name": str(plist.get("TeamName", ""))[:255] or None,
            "name": str(plist.get("Name", ""))[:255] or None,
            "expires_at": expires.replace(tzinfo=dt.timezone.utc) if expires.tzinfo is None else expires}


def version_key(version: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4]) + (0,) * (4 - min(4, len(re.findall(r"\d+", version))))
