"""A protocol-faithful iPad simulator, used by the tests and by bench/.

It speaks to the server only over HTTP(S), like a real device: it downloads
the enrollment profile and verifies its CMS signature, enrolls over SCEP
with a real CSR, sends signed (Mdm-Signature) check-in messages and answers
commands with realistic data. Declarative management (tests/sim_ddm.py): it syncs declarations
when the server asks, applies them and sends status reports.
"""
from __future__ import annotations

import base64
import datetime as dt
import plistlib
import secrets
import uuid
from dataclasses import dataclass, field

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ipad_mdm.crypto import cms
from ipad_mdm.crypto.keys import FileKey

from . import sim_scep
from .sim_ddm import DDMDevice, DDMState
from .sim_ade import ADEDevice
from .sim_vpn import VPNDevice

_SHORT_NAMES = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
                "C": NameOID.COUNTRY_NAME}


class SimulatorError(AssertionError):
    pass


class _Refused(Exception):
    """What an iPad answers with an ErrorChain (the command reached it but it would not do it)."""

    def __init__(self, code: int, domain: str, text: str):
        super().__init__(text)
        self.code, self.domain, self.text = code, domain, text


@dataclass
class DeviceState:
    """What the simulated iPad reports in its inventory; tests flip these."""

    os_version: str = "18.1"
    build_version: str = "22B83"
    model: str = "iPad13,18"
    model_name: str = "iPad"
    product_name: str = "iPad13,18"
    device_name: str = "iPad của Lãnh đạo"
    passcode_present: bool = True
    passcode_compliant: bool = True
    hardware_encryption_caps: int = 3
    is_supervised: bool = True
    lost_mode: bool = False
    awaiting_configuration: bool = False  # held in Setup Assistant (ADE, await_device_configured)
    installed_profiles: dict = field(default_factory=dict)  # identifier -> profile plist dict
    apps: list = field(default_factory=lambda: [
        {"Identifier": "com.apple.mobilesafari", "Name": "Safari", "Version": "18.1", "ShortVersion": "18.1", "BundleSize": 1},
        {"Identifier": "com.wireguard.ios", "Name": "WireGuard", "Version": "1.0.16", "ShortVersion": "1.0.16", "BundleSize": 11000000},
    ])
    app_configurations: dict = field(default_factory=dict)  # bundle id -> managed configuration received
    app_attributes: dict = field(default_factory=dict)      # bundle id -> Attributes (VPNUUID: its per-app VPN)
    os_update_error: str | None = None                  # ScheduleOSUpdate fails with this
    os_builds: dict = field(default_factory=lambda: {"18.2": "22C152", "18.3": "22D63"})
    install_errors: dict = field(default_factory=dict)  # bundle id -> (ErrorCode, ErrorDomain, text)
    store_apps: dict = field(default_factory=dict)      # iTunesStoreID -> bundle id
    store_versions: dict = field(default_factory=dict)  # bundle id -> (version, build) the App Store has
    not_now: set = field(default_factory=set)      # request types answered NotNow
    vpn_broken: set = field(default_factory=set)   # VPNSubTypes whose tunnel never comes up ("*": all)
    errors: dict = field(default_factory=dict)     # request type -> ErrorChain to answer with


class SimulatedIPad(DDMDevice, VPNDevice, ADEDevice):
    def __init__(self, base_url: str, *, verify=True, udid: str | None = None, serial: str | None = None,
                 client: httpx.Client | None = None, state: DeviceState | None = None, key=None):
        self.base_url = base_url.rstrip("/")
        self.udid = udid or str(uuid.uuid4()).upper()
        self.serial = serial or ("F" + secrets.token_hex(5).upper())
        self.state = state or DeviceState()
        self.client = client or httpx.Client(verify=verify, timeout=30)
        self.push_token = secrets.token_bytes(32)
        self.push_magic = str(uuid.uuid4()).upper()
        self.unlock_token = secrets.token_bytes(48)
        self.profile: dict | None = None
        self.profile_signer: x509.Certificate | None = None
        self.ca_cert: x509.Certificate | None = None
        self.scep_recipient: x509.Certificate | None = None  # GetCACert's RA, or the CA when it has none
        self.key = key  # benchmarks share one RSA key between thousands of simulated devices
        self.identity: x509.Certificate | None = None
        self.mdm_payload: dict | None = None
        self.handled: list[dict] = []
        self.ddm = DDMState()

    # ------------------------------------------------------------ enrollment
    def fetch_profile(self, enroll_url: str) -> httpx.Response:
        return self.client.get(enroll_url)

    def enroll(self, enroll_url: str, *, cipher: str = "aes256") -> None:
        """Download + verify the profile, SCEP, Authenticate, TokenUpdate."""
        resp = self.fetch_profile(enroll_url)
        if resp.status_code != 200:
            raise SimulatorError(f"enrollment profile refused: {resp.status_code} {resp.text}")
        if resp.headers.get("content-type", "").split(";")[0] != "application/x-apple-aspen-config":
            raise SimulatorError(f"wrong content type {resp.headers.get('content-type')}")
        self.install_enrollment_profile(resp.content)
        self.scep_enroll(cipher=cipher)
        r = self.authenticate()
        if r.status_code != 200:
            raise SimulatorError(f"Authenticate refused: {r.status_code} {r.text}")
        r = self.token_update()
        if r.status_code != 200:
            raise SimulatorError(f"TokenUpdate refused: {r.status_code} {r.text}")

    def install_enrollment_profile(self, signed: bytes) -> None:
        verified = cms.verify(signed)
        profile = plistlib.loads(verified.content)
        by_type = {p["PayloadType"]: p for p in profile["PayloadContent"]}
        ca = x509.load_der_x509_certificate(by_type["com.apple.security.root"]["PayloadContent"])
        # iOS shows a profile as "Verified" when the signer chains to a trusted root.
        verified.signer.verify_directly_issued_by(ca)
        self.ca_cert = ca
        self.profile_signer = verified.signer
        self.profile = profile
        self.mdm_payload = by_type["com.apple.mdm"]
        self.scep_payload = by_type["com.apple.security.scep"]["PayloadContent"]
        if self.mdm_payload["IdentityCertificateUUID"] != by_type["com.apple.security.scep"]["PayloadUUID"]:
            raise SimulatorError("MDM payload does not point at the SCEP identity")

    def scep_enroll(self, *, cipher: str = "aes256", challenge: str | None = None) -> x509.Certificate:
        url = self.scep_payload["URL"]
        caps = self.client.get(url, params={"operation": "GetCACaps"})
        if caps.status_code != 200 or "SHA-256" not in caps.text:
            raise SimulatorError(f"GetCACaps failed: {caps.status_code}")
        cacert = self.client.get(url, params={"operation": "GetCACert"})
        try:
            _ca, recipient = sim_scep.ca_and_recipient(cacert.content, cacert.headers.get("content-type", ""),
                                                       self.ca_cert)
        except ValueError as exc:
            raise SimulatorError(f"GetCACert: {exc}") from None
        self.scep_recipient = recipient  # the RA when the server has one: the request is for it
        if self.key is None:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=self.scep_payload.get("Keysize", 2048))
        subject = x509.Name([
            x509.NameAttribute(_SHORT_NAMES[rdn[0][0]], rdn[0][1]) for rdn in self.scep_payload["Subject"]
        ])
        message, _tid, self_signed = sim_scep.build_pkcs_req(
            recipient, self.key, subject, challenge if challenge is not None else self.scep_payload["Challenge"],
            cipher=cipher
        )
        resp = self.client.post(url, params={"operation": "PKIOperation"}, content=message,
                                headers={"Content-Type": "application/x-pki-message"})
        if resp.status_code != 200:
            raise SimulatorError(f"PKIOperation failed: {resp.status_code} {resp.text[:200]}")
        self.identity = sim_scep.parse_cert_rep(resp.content, recipient, self.key, self_signed)
        return self.identity

    # ------------------------------------------------------------ messages
    def sign(self, body: bytes) -> str:
        return base64.b64encode(cms.sign(body, self.identity, FileKey(self.key), detached=True)).decode()

    def put(self, path_url: str, message: dict, *, sign: bool = True, headers: dict | None = None) -> httpx.Response:
        body = plistlib.dumps(message)
        h = {"Content-Type": "application/x-apple-aspen-mdm-checkin"}
        if sign:
            h["Mdm-Signature"] = self.sign(body)
        h.update(headers or {})
        try:
            return self.client.put(path_url, content=body, headers=h)
        except httpx.RemoteProtocolError:
            # The server closed the kept-alive connection as the request went out (its keep-alive
            # timeout, a worker restarted): iOS's URL loading resends an idempotent PUT once on a
            # new connection, and so does this iPad. A second failure is the caller's.
            return self.client.put(path_url, content=body, headers=h)

    def checkin(self, message: dict, **kw) -> httpx.Response:
        return self.put(self.mdm_payload["CheckInURL"], message, **kw)

    def authenticate(self) -> httpx.Response:
        return self.checkin({
            "MessageType": "Authenticate", "Topic": self.mdm_payload["Topic"], "UDID": self.udid,
            "SerialNumber": self.serial, "OSVersion": self.state.os_version, "BuildVersion": self.state.build_version,
            "ProductName": self.state.product_name, "Model": self.state.model, "ModelName": self.state.model_name,
            "DeviceName": self.state.device_name,
        })

    def token_update(self) -> httpx.Response:
        return self.checkin({
            "MessageType": "TokenUpdate", "Topic": self.mdm_payload["Topic"], "UDID": self.udid,
            "Token": self.push_token, "PushMagic": self.push_magic, "UnlockToken": self.unlock_token,
            "AwaitingConfiguration": self.state.awaiting_configuration,
        })

    def checkout(self) -> httpx.Response:
        return self.checkin({"MessageType": "CheckOut", "Topic": self.mdm_payload["Topic"], "UDID": self.udid})

    def connect(self, status: str = "Idle", command_uuid: str | None = None, **extra) -> httpx.Response:
        message = {"UDID": self.udid, "Status": status, **extra}
        if command_uuid:
            message["CommandUUID"] = command_uuid
        return self.put(self.mdm_payload["ServerURL"], message)

    # ------------------------------------------------------------ command loop
    def process_commands(self, max_rounds: int = 50) -> list[dict]:
        """Connect with Idle and answer every command until the server has none."""
        handled = []
        resp = self.connect("Idle")
        for _ in range(max_rounds):
            if resp.status_code != 200:
                raise SimulatorError(f"connect failed: {resp.status_code} {resp.text}")
            if not resp.content:
                self.handled.extend(handled)
                if self.ddm.sync_needed:
                    # Like iPadOS: a DeclarativeManagement command starts a sync after the MDM session.
                    self.ddm_sync()
                return handled
            command = plistlib.loads(resp.content)
            handled.append(command)
            status, payload = self.answer(command["Command"])
            resp = self.connect(status, command["CommandUUID"], **payload)
        raise SimulatorError("server kept sending commands")

    def answer(self, command: dict) -> tuple[str, dict]:
        rt = command["RequestType"]
        if rt in self.state.not_now:
            return "NotNow", {}
        if rt in self.state.errors:
            return "Error", {"ErrorChain": self.state.errors[rt]}
        handler = getattr(self, f"_answer_{rt}", None)
        if handler is None:
            return "Error", {"ErrorChain": [{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
                                             "LocalizedDescription": f"Unknown command {rt}", "USEnglishDescription": f"Unknown command {rt}"}]}
        try:
            return "Acknowledged", handler(command) or {}
        except _Refused as exc:
            return "Error", {"ErrorChain": [{"ErrorCode": exc.code, "ErrorDomain": exc.domain,
                                             "LocalizedDescription": exc.text, "USEnglishDescription": exc.text}]}

    def _answer_DeviceInformation(self, command):
        values = {
            "UDID": self.udid, "SerialNumber": self.serial, "OSVersion": self.state.os_version,
            "BuildVersion": self.state.build_version, "Model": self.state.model, "ModelName": self.state.model_name,
            "ProductName": self.state.product_name, "DeviceName": self.state.device_name, "IsSupervised": self.state.is_supervised,
            "IsMDMLostModeEnabled": self.state.lost_mode, "DeviceCapacity": 128.0, "AvailableDeviceCapacity": 90.5,
            "BatteryLevel": 0.82, "IsActivationLockEnabled": False, "IsCloudBackupEnabled": False,
            "WiFiMAC": "a4:83:e7:12:34:56", "BluetoothMAC": "a4:83:e7:12:34:57",
            "AwaitingConfiguration": self.state.awaiting_configuration,
            "TimeZone": "Asia/Ho_Chi_Minh",
        }
        return {"QueryResponses": {q: values[q] for q in command["Queries"] if q in values}}

    def _answer_SecurityInfo(self, command):
        return {"SecurityInfo": {
            "HardwareEncryptionCaps": self.state.hardware_encryption_caps,
            "PasscodePresent": self.state.passcode_present,
            "PasscodeCompliant": self.state.passcode_compliant,
            "PasscodeCompliantWithProfiles": self.state.passcode_compliant,
            "PasscodeLockGracePeriodEnforced": 0,
            "FDE_Enabled": False,
            "ManagementStatus": {"EnrolledViaDEP": False, "IsUserEnrollment": False, "IsActivationLockManageable": False},
        }}

    def _profile_entries(self):
        entries = [{
            "PayloadIdentifier": self.profile["PayloadIdentifier"], "PayloadUUID": self.profile["PayloadUUID"],
            "PayloadDisplayName": self.profile.get("PayloadDisplayName", ""), "PayloadVersion": 1,
            "IsManaged": True, "PayloadRemovalDisallowed": False, "IsEncrypted": False,
            "PayloadContent": [{"PayloadType": p["PayloadType"], "PayloadIdentifier": p["PayloadIdentifier"],
                                "PayloadUUID": p["PayloadUUID"], "PayloadVersion": 1} for p in self.profile["PayloadContent"]],
        }]
        for ident, prof in self.state.installed_profiles.items():
            entries.append({
                "PayloadIdentifier": ident, "PayloadUUID": prof.get("PayloadUUID", ""), "PayloadVersion": 1,
                "PayloadDisplayName": prof.get("PayloadDisplayName", ""), "IsManaged": True, "IsEncrypted": False,
                "PayloadRemovalDisallowed": bool(prof.get("PayloadRemovalDisallowed", False)),
                "PayloadContent": [{"PayloadType": p["PayloadType"], "PayloadIdentifier": p["PayloadIdentifier"],
                                    "PayloadUUID": p["PayloadUUID"], "PayloadVersion": 1} for p in prof.get("PayloadContent", [])],
            })
        return entries

    def _answer_ProfileList(self, command):
        return {"ProfileList": self._profile_entries()}

    def _answer_CertificateList(self, command):
        certs = [self.ca_cert, self.identity]
        return {"CertificateList": [
            {"CommonName": c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
             "Data": c.public_bytes(serialization.Encoding.DER), "IsIdentity": c == self.identity}
            for c in certs
        ]}

    def _answer_InstalledApplicationList(self, command):
        return {"InstalledApplicationList": list(self.state.apps)}

    def _answer_InstallProfile(self, command):
        """Like the office's supervised iPads: only a profile whose CMS signature verifies, by a
        signer that chains to the CA the enrollment profile installed, is installed."""
        payload = command["Payload"]
        try:
            verified = cms.verify(payload)
            verified.signer.verify_directly_issued_by(self.ca_cert)
        except Exception:  # not CMS, bad signature, foreign signer
            raise _Refused(1006, "MCProfileErrorDomain", "The profile signature is not valid") from None
        profile = plistlib.loads(verified.content)
        self.state.installed_profiles[profile["PayloadIdentifier"]] = profile
        return {}

    def _answer_RemoveProfile(self, command):
        self.state.installed_profiles.pop(command["Identifier"], None)
        return {}

    def _answer_ClearPasscode(self, command):
        if command.get("UnlockToken") != self.unlock_token:
            raise _Refused(12067, "MCMDMErrorDomain", "The unlock token is not valid")
        self.state.passcode_present = False
        self.state.passcode_compliant = False
        return {}

    def _answer_DeviceLock(self, command):
        return {}

    def _answer_EnableLostMode(self, command):
        self.state.lost_mode = True
        return {}

    def _answer_DisableLostMode(self, command):
        self.state.lost_mode = False
        return {}

    def _answer_RestartDevice(self, command):
        return {}

    def _answer_EraseDevice(self, command):
        return {}

    def _answer_InstallApplication(self, command):
        """Like iPadOS: a manifest install fetches the manifest, then the .ipa, and reads its Info.plist;
        a store install needs only the ID. state.install_errors[bundle] makes it fail with Apple's code."""
        import io
        import zipfile

        if "ManifestURL" in command:
            r = self.client.get(command["ManifestURL"])
            if r.status_code != 200:
                raise _Refused(12004, "MCInstallationErrorDomain", f"Manifest download failed ({r.status_code})")
            item = plistlib.loads(r.content)["items"][0]
            ipa = self.client.get(item["assets"][0]["url"])
            if ipa.status_code != 200:
                raise _Refused(12004, "MCInstallationErrorDomain", "App download failed")
            with zipfile.ZipFile(io.BytesIO(ipa.content)) as zf:
                info_name = next(n for n in zf.namelist() if n.endswith(".app/Info.plist"))
                info = plistlib.loads(zf.read(info_name))
            bundle, version, build = info["CFBundleIdentifier"], info["CFBundleShortVersionString"], info["CFBundleVersion"]
            if bundle != item["metadata"]["bundle-identifier"]:
                raise _Refused(12005, "MCInstallationErrorDomain", "Bundle identifier mismatch")
        else:
            bundle = self.state.store_apps.get(command["iTunesStoreID"], f"store.{command['iTunesStoreID']}")
            version, build = self.state.store_versions.get(bundle, ("1.0", "1"))
        if bundle in self.state.install_errors:
            code, domain, text = self.state.install_errors[bundle]
            raise _Refused(code, domain, text)
        self.state.apps = [a for a in self.state.apps if a["Identifier"] != bundle] + [{
            "Identifier": bundle, "Name": bundle.rsplit(".", 1)[-1], "Version": build, "ShortVersion": version,
            "BundleSize": 1000, "IsManaged": True}]
        if "Configuration" in command:
            self.state.app_configurations[bundle] = command["Configuration"]
        return {"Identifier": bundle, "State": "Installing"}

    def _answer_ScheduleOSUpdate(self, command):
        """InstallASAP of a newer version: the simulated iPad installs it (and would restart)."""
        results = []
        for update in command["Updates"]:
            version = update.get("ProductVersion")
            if self.state.os_update_error:
                results.append({"ProductKey": f"iOSUpdate{version}", "InstallAction": "Error", "Status": "InstallFailed",
                                "ErrorChain": [{"ErrorCode": 7, "ErrorDomain": "SUErrorDomain",
                                                "LocalizedDescription": self.state.os_update_error}]})
                continue
            if version and update.get("InstallAction") in ("InstallASAP", "Default", "InstallForceRestart"):
                self.state.os_version = version
                self.state.build_version = self.state.os_builds.get(version, self.state.build_version)
            results.append({"ProductKey": f"iOSUpdate{version}", "InstallAction": update.get("InstallAction", "Default"),
                            "Status": "Installing"})
        return {"UpdateResults": results}

    def _answer_Settings(self, command):
        for item in command["Settings"]:
            if item.get("Item") == "ApplicationConfiguration":
                self.state.app_configurations[item["Identifier"]] = item.get("Configuration")
            elif item.get("Item") == "ApplicationAttributes":
                self.state.app_attributes[item["Identifier"]] = item.get("Attributes") or {}
        return {"Settings": [{"Item": i.get("Item"), "Status": "Acknowledged"} for i in command["Settings"]]}

    def _answer_ManagedApplicationList(self, command):
        wanted = command.get("Identifiers")
        return {"ManagedApplicationList": {
            a["Identifier"]: {"Status": "Managed", "ManagementFlags": 1,
                              "HasConfiguration": a["Identifier"] in self.state.app_configurations}
            for a in self.state.apps if a.get("IsManaged") and (not wanted or a["Identifier"] in wanted)}}

    def _answer_RemoveApplication(self, command):
        self.state.apps = [a for a in self.state.apps if a["Identifier"] != command["Identifier"]]
        return {}

    def _answer_DeviceLocation(self, command):
        return {"Latitude": 21.0278, "Longitude": 105.8342, "HorizontalAccuracy": 10.0,
                "Timestamp": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)}

    def document_app(self, base_url: str, *, cafile: str, **kw) -> httpx.Client:
        """The office's document app on this iPad: TLS to the document system's proxy with the
        device's identity certificate as client certificate (the identity the MDM profile installed)."""
        import os
        import ssl
        import tempfile

        ctx = ssl.create_default_context(cafile=cafile)
        fd, path = tempfile.mkstemp(prefix="sim-identity-", suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.identity.public_bytes(serialization.Encoding.PEM))
                f.write(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            ctx.load_cert_chain(path)
        finally:
            os.unlink(path)
        return httpx.Client(verify=ctx, base_url=base_url, timeout=30, **kw)

    def close(self) -> None:
        self.client.close()
