"""Declarative device management as an iPad does it, for tests/simulator.py.

The simulated iPad reports its client capabilities, fetches tokens, the declaration manifest and
each changed declaration, applies them (passcode policy, OS update enforcement, status
subscriptions, assets fetched with its MDM identity, legacy profiles), keeps its own state, and
sends full and incremental status reports with only the items it is subscribed to.
"""
from __future__ import annotations

import base64
import hashlib
import json
import plistlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ipad_mdm.crypto import cms

KINDS = {"Activations": "activation", "Assets": "asset", "Configurations": "configuration", "Management": "management"}
ALL_TYPES = {
    "activations": ["com.apple.activation.simple"],
    "assets": ["com.apple.asset.credential.certificate", "com.apple.asset.credential.identity",
               "com.apple.asset.credential.scep", "com.apple.asset.data"],
    "configurations": ["com.apple.configuration.passcode.settings", "com.apple.configuration.legacy",
                       "com.apple.configuration.management.status-subscriptions",
                       "com.apple.configuration.security.certificate", "com.apple.configuration.security.identity",
                       "com.apple.configuration.softwareupdate.enforcement.specific",
                       "com.apple.configuration.softwareupdate.settings", "com.apple.configuration.app.managed"],
    "management": ["com.apple.management.organization-info", "com.apple.management.properties",
                   "com.apple.management.server-capabilities"],
}


def _vt(v: str) -> tuple:
    parts = [int(p) if p.isdigit() else 0 for p in (v or "0").split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


@dataclass
class DDMState:
    supported: bool = True                               # iPadOS 15+ with DDM; False = older iPad
    unsupported_types: set = field(default_factory=set)  # declaration types this iPad lacks
    enabled: bool = False
    token: str | None = None
    declarations: dict = field(default_factory=dict)     # identifier -> declaration document
    fail: dict = field(default_factory=dict)             # identifier -> reason code to report
    subscriptions: set = field(default_factory=set)
    passcode_length: int = 6
    passcode_alphanumeric: bool = False
    update_failure: str | None = None                    # the softwareupdate failure reason to report
    auto_update: bool = False                            # install an enforced update as soon as it arrives
    assets: dict = field(default_factory=dict)           # identifier -> bytes fetched
    certificates: dict = field(default_factory=dict)     # identifier -> (x509, is_identity)
    reported: dict = field(default_factory=dict)         # last values sent, per item
    sync_needed: bool = False
    requests: list = field(default_factory=list)         # endpoints fetched (for tests)
    app_states: dict = field(default_factory=dict)       # bundle -> (state, short-version, version, declaration)


class DDMDevice:
    """Mixed into SimulatedIPad (needs self.checkin, self.sign, self.client, self.state, self.udid)."""

    ddm: DDMState

    # ------------------------------------------------------------ transport
    def ddm_request(self, endpoint: str, data: bytes | None = None, **kw):
        message = {"MessageType": "DeclarativeManagement", "UDID": self.udid, "Endpoint": endpoint}
        if data is not None:
            message["Data"] = data
        self.ddm.requests.append(endpoint)
        return self.checkin(message, **kw)

    def _json(self, endpoint: str):
        r = self.ddm_request(endpoint)
        if r.status_code != 200:
            raise AssertionError(f"{endpoint}: {r.status_code} {r.text[:200]}")
        return r.json()

    def _answer_DeclarativeManagement(self, command):
        if not self.ddm.supported:
            from .simulator import _Refused

            raise _Refused(12021, "MCMDMErrorDomain", "Unknown command DeclarativeManagement")
        self.ddm.enabled = True
        data = command.get("Data")
        if data:
            tokens = json.loads(data)["SyncTokens"]
            self.ddm.sync_needed = tokens["DeclarationsToken"] != self.ddm.token
        else:
            self.ddm.sync_needed = True
        return {}

    # ------------------------------------------------------------ sync
    def ddm_sync(self, *, force_status: bool = False) -> bool:
        """tokens -> declaration-items -> changed declarations -> apply -> status. Returns whether
        anything was downloaded."""
        self.ddm.sync_needed = False
        tokens = self._json("tokens")["SyncTokens"]
        first = self.ddm.token is None
        if tokens["DeclarationsToken"] == self.ddm.token:
            if force_status:
                self.send_status()
            return False
        manifest = self._json("declaration-items")
        wanted = {}
        for key, kind in KINDS.items():
            for item in manifest["Declarations"][key]:
                wanted[item["Identifier"]] = (kind, item["ServerToken"])
        for ident in [i for i in self.ddm.declarations if i not in wanted]:
            self._remove(ident)
        for ident, (kind, token) in wanted.items():
            held = self.ddm.declarations.get(ident)
            if held is None or held["ServerToken"] != token:
                self.ddm.declarations[ident] = self._json(f"declaration/{kind}/{ident}")
        self.ddm.token = manifest["DeclarationsToken"]
        self._apply_all()
        self.send_status(full=first)
        return True

    def _remove(self, ident: str) -> None:
        doc = self.ddm.declarations.pop(ident)
        if doc["Type"] == "com.apple.configuration.legacy":
            self.state.installed_profiles.pop(doc.get("_profile_identifier"), None)
        self.ddm.certificates.pop(ident, None)

    def _active_configurations(self) -> set:
        active = set()
        for doc in self.ddm.declarations.values():
            if doc["Type"] == "com.apple.activation.simple" and doc["Identifier"] not in self.ddm.fail:
                predicate = doc["Payload"].get("Predicate")
                if predicate is None or self._predicate(predicate):
                    active.update(doc["Payload"]["StandardConfigurations"])
        return active

    def _predicate(self, predicate: str) -> bool:
        # Enough of Apple's predicate language for tests: family and OS version comparisons.
        return "@status(device.model.family) == 'Mac'" not in predicate

    def _apply_all(self) -> None:
        active = self._active_configurations()
        self.ddm.subscriptions = set()
        for ident, doc in self.ddm.declarations.items():
            if ident not in active or ident in self.ddm.fail or doc["Type"] in self.ddm.unsupported_types:
                continue
            p = doc["Payload"]
            t = doc["Type"]
            if t == "com.apple.configuration.management.status-subscriptions":
                self.ddm.subscriptions.update(i["Name"] for i in p["StatusItems"])
            elif t == "com.apple.configuration.passcode.settings":
                self.ddm.passcode_policy = p
            elif t == "com.apple.configuration.softwareupdate.enforcement.specific":
                if self.ddm.auto_update and not self.ddm.update_failure and _vt(self.state.os_version) < _vt(p["TargetOSVersion"]):
                    self.state.os_version = p["TargetOSVersion"]
                    self.state.build_version = p.get("TargetBuildVersion") or self.state.build_version
            elif t == "com.apple.configuration.app.managed":
                self._install_managed_app(ident, p)
            elif t == "com.apple.configuration.legacy":
                r = self.client.get(p["ProfileURL"], headers={"Mdm-Signature": self.sign(b"")})
                if r.status_code != 200:
                    self.ddm.fail[ident] = "Error.ConfigurationCannotBeApplied"
                    continue
                verified = cms.verify(r.content)
                verified.signer.verify_directly_issued_by(self.ca_cert)
                profile = plistlib.loads(verified.content)
                self.state.installed_profiles[profile["PayloadIdentifier"]] = profile
                doc["_profile_identifier"] = profile["PayloadIdentifier"]
            elif t in ("com.apple.configuration.security.certificate", "com.apple.configuration.security.identity"):
                data = self._asset(p["CredentialAssetReference"])
                if data is None:
                    self.ddm.fail[ident] = "Error.AssetCannotBeDownloaded"
                    continue
                if t.endswith("certificate"):
                    self.ddm.certificates[ident] = (x509.load_pem_x509_certificate(data), False)
                else:
                    cred = json.loads(data)
                    _key, cert, _chain = pkcs12.load_key_and_certificates(base64.b64decode(cred["Identity"]),
                                                                          cred["Password"].encode())
                    self.ddm.certificates[ident] = (cert, True)

    def _install_managed_app(self, ident: str, p: dict) -> None:
        """app.managed: install (or update to) the app the declaration names, as iPadOS does."""
        bundle = p.get("BundleID") or self.state.store_apps.get(int(p["AppStoreID"]), f"store.{p['AppStoreID']}")
        if bundle in self.state.install_errors:
            self.ddm.app_states[bundle] = ("failed", None, None, ident)
            self.ddm.fail[ident] = "Error.InstallFailed"
            return
        have = next((a for a in self.state.apps if a["Identifier"] == bundle), None)
        if "ManifestURL" in p:
            r = self.client.get(p["ManifestURL"])
            item = plistlib.loads(r.content)["items"][0]
            version = item["metadata"]["bundle-version"]
            if have is None or have["ShortVersion"] != version:
                self._answer_InstallApplication({"ManifestURL": p["ManifestURL"]})
        elif have is None:
            self._answer_InstallApplication({"iTunesStoreID": int(p["AppStoreID"])})
        app = next(a for a in self.state.apps if a["Identifier"] == bundle)
        self.ddm.app_states[bundle] = ("managed", app["ShortVersion"], app["Version"], ident)

    def _asset(self, ident: str) -> bytes | None:
        doc = self.ddm.declarations.get(ident)
        if doc is None:
            return None
        ref = doc["Payload"]["Reference"]
        headers = {"Mdm-Signature": self.sign(b"")} if doc["Payload"].get("Authentication", {}).get("Type") == "MDM" else {}
        r = self.client.get(ref["DataURL"], headers=headers)
        if r.status_code != 200 or len(r.content) != ref.get("Size", len(r.content)) or \
                hashlib.sha256(r.content).hexdigest() != ref.get("Hash-SHA-256", hashlib.sha256(r.content).hexdigest()):
            return None
        self.ddm.assets[ident] = r.content
        return r.content

    # ------------------------------------------------------------ status
    def _enforcement(self) -> dict | None:
        active = self._active_configurations()
        for ident, doc in self.ddm.declarations.items():
            if doc["Type"].endswith("softwareupdate.enforcement.specific") and ident in active:
                return doc["Payload"]
        return None

    def _passcode_compliant(self) -> bool:
        if not self.state.passcode_present:
            return False
        policy = getattr(self.ddm, "passcode_policy", None) or {}
        if self.ddm.passcode_length < policy.get("MinimumLength", 0):
            return False
        if policy.get("RequireAlphanumericPasscode") and not self.ddm.passcode_alphanumeric:
            return False
        return self.state.passcode_compliant

    def status_items(self) -> dict:
        enf = self._enforcement()
        behind = enf is not None and _vt(self.state.os_version) < _vt(enf["TargetOSVersion"])
        decls = {"activations": [], "configurations": [], "assets": [], "management": []}
        active = self._active_configurations()
        for ident, doc in self.ddm.declarations.items():
            kind = doc["Type"].split(".")[2]
            key = {"activation": "activations", "configuration": "configurations", "asset": "assets",
                   "management": "management"}[kind]
            entry = {"identifier": ident, "server-token": doc["ServerToken"],
                     "active": kind != "configuration" or ident in active, "valid": "valid"}
            if ident in self.ddm.fail or doc["Type"] in self.ddm.unsupported_types:
                code = self.ddm.fail.get(ident, "Error.ConfigurationCannotBeDeserialized")
                entry.update(valid="invalid", active=False,
                             reasons=[{"code": code, "description": f"{code} ({ident})"}])
            decls[key].append(entry)
        items = {
            "device.operating-system.version": self.state.os_version,
            "device.operating-system.build-version": self.state.build_version,
            "passcode.is-present": self.state.passcode_present,
            "passcode.is-compliant": self._passcode_compliant(),
            "management.declarations": decls,
            "management.client-capabilities": self.client_capabilities(),
            "softwareupdate.install-state": ("failed" if self.ddm.update_failure else "downloading") if behind else "none",
            "softwareupdate.pending-version": ({"os-version": enf["TargetOSVersion"],
                                                "build-version": enf.get("TargetBuildVersion", "")} if behind else
                                               {"os-version": "", "build-version": ""}),
            "softwareupdate.failure-reason": ({"count": 1, "reason": self.ddm.update_failure} if self.ddm.update_failure
                                              else {"count": 0}),
            "security.certificate.list": [
                {"identifier": ident, "declaration-identifier": ident,
                 "subject-summary": cert.subject.rfc4514_string(), "is-identity": is_identity,
                 "data": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()}
                for ident, (cert, is_identity) in self.ddm.certificates.items()],
            "app.managed.list": [
                {"identifier": bundle, "declaration-identifier": ident, "state": state, "name": bundle.rsplit(".", 1)[-1],
                 **({"short-version": short, "version": build} if short else {})}
                for bundle, (state, short, build, ident) in sorted(self.ddm.app_states.items())],
        }
        return items

    def client_capabilities(self) -> dict:
        types = {k: [t for t in v if t not in self.ddm.unsupported_types] for k, v in ALL_TYPES.items()}
        return {"supported-versions": ["1.0.0"], "supported-features": {},
                "supported-payloads": {"declarations": types, "status-items": sorted(self.status_names())}}

    @staticmethod
    def status_names() -> set:
        return {"device.operating-system.version", "device.operating-system.build-version", "passcode.is-present",
                "passcode.is-compliant", "management.declarations", "management.client-capabilities",
                "softwareupdate.install-state", "softwareupdate.pending-version", "softwareupdate.failure-reason",
                "security.certificate.list", "app.managed.list"}

    def send_status(self, *, full: bool = False, only: set | None = None):
        """A status report: full (everything subscribed) or incremental (only what changed since
        the last report). Returns the HTTP response (None when nothing changed)."""
        items = self.status_items()
        subscribed = self.ddm.subscriptions | {"management.declarations", "management.client-capabilities"}
        chosen = {}
        for name, value in items.items():
            if name not in subscribed or (only is not None and name not in only):
                continue
            if full or self.ddm.reported.get(name) != value:
                chosen[name] = value
        if not chosen:
            return None
        r = self.ddm_request("status", json.dumps(self.status_report(chosen, full=full)).encode())
        if r.status_code != 200:
            raise AssertionError(f"status report refused: {r.status_code} {r.text[:200]}")
        self.ddm.reported.update(chosen)
        return r

    @staticmethod
    def status_report(flat: dict, *, full: bool) -> dict:
        tree: dict = {}
        for name, value in flat.items():
            parts = name.split(".")
            node = tree
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        return {"StatusItems": tree, "Errors": [], "FullReport": full}

    # ------------------------------------------------------------ things a test makes happen
    def remove_passcode(self):
        self.state.passcode_present = False
        self.state.passcode_compliant = False
        return self.send_status()

    def set_passcode(self, length: int = 6, alphanumeric: bool = False):
        self.state.passcode_present = True
        self.state.passcode_compliant = True
        self.ddm.passcode_length, self.ddm.passcode_alphanumeric = length, alphanumeric
        return self.send_status()

    def install_os_update(self, version: str | None = None, build: str | None = None):
        enf = self._enforcement() or {}
        self.state.os_version = version or enf["TargetOSVersion"]
        self.state.build_version = build or enf.get("TargetBuildVersion") or self.state.build_version
        self.ddm.update_failure = None
        return self.send_status()

    def fail_declaration(self, identifier: str, code: str = "Error.ConfigurationCannotBeApplied"):
        self.ddm.fail[identifier] = code
        self._apply_all()
        return self.send_status()
