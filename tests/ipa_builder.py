"""Build in-house app files (.ipa) as Xcode does: a zip with Payload/<Name>.app/Info.plist (binary
plist) and embedded.mobileprovision, a CMS SignedData over the profile plist (signed here by a test
stand-in for Apple's provisioning CA)."""
from __future__ import annotations

import datetime as dt
import io
import os
import plistlib
import zipfile
from functools import lru_cache

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import FileKey


@lru_cache(maxsize=1)
def _apple_stand_in():
    from tests.test_gateway import issue, self_signed_ca

    ca, ca_key = self_signed_ca("Apple Worldwide Developer Relations (test stand-in)")
    cert, key = issue(ca, ca_key, "iPhone Distribution: Van phong Chinh phu", signer=True)
    return cert, key


def provisioning_profile(*, team="VPCP123456", expires: dt.datetime | None = None, name="VPCP In-House") -> bytes:
    expires = expires or dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None) + dt.timedelta(days=300)
    content = plistlib.dumps({"Name": name, "TeamIdentifier": [team], "TeamName": "Văn phòng Chính phủ",
                              "ExpirationDate": expires, "UUID": "7A3F0E55-1111-2222-3333-444455556666",
                              "ProvisionsAllDevices": True})
    cert, key = _apple_stand_in()
    return cms.sign(content, cert, FileKey(key))


def build_ipa(bundle_id="vn.gov.vpcp.vanban", version="1.0", build="100", *, name="VanBan", profile: bytes | None = None,
              with_profile: bool = True, with_info: bool = True, padding: int = 4096) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        base = f"Payload/{name}.app/"
        if with_info:
            zf.writestr(base + "Info.plist", plistlib.dumps({
                "CFBundleIdentifier": bundle_id, "CFBundleShortVersionString": version, "CFBundleVersion": build,
                "CFBundleDisplayName": "Văn bản điều hành", "CFBundleName": name, "MinimumOSVersion": "16.0"},
                fmt=plistlib.FMT_BINARY))
        if with_profile:
            zf.writestr(base + "embedded.mobileprovision", profile if profile is not None else provisioning_profile())
        zf.writestr(base + name, b"\xcf\xfa\xed\xfe" + os.urandom(padding))  # the executable (a Mach-O stand-in)
    return buf.getvalue()
