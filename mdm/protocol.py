"""Apple MDM messages: parse check-in and command responses, build commands.

Pure functions over bytes and dicts; no Flask, no database. Keys and types
follow Apple's published reference (apple/device-management: mdm/checkin,
mdm/commands).
"""
from __future__ import annotations

import logging
import re
import uuid as uuidlib
from dataclasses import dataclass, field

from ipad_mdm import plists

log = logging.getLogger(__name__)
UDID_RE = re.compile(r"^[0-9A-Fa-f-]{24,64}$")


class ProtocolError(ValueError):
    """A message that does not follow the MDM protocol; answered with 400."""


# ---------------------------------------------------------------- check-in

@dataclass(frozen=True)
class CheckinMessage:
    message_type: str
    udid: str
    topic: str
    raw: dict = field(repr=False)

    # Authenticate
    @property
    def serial_number(self) -> str | None:
        return self.raw.get("SerialNumber")


@dataclass(frozen=True)
class Authenticate(CheckinMessage):
    pass


@dataclass(frozen=True)
class TokenUpdate(CheckinMessage):
    token: bytes = b""
    push_magic: str = ""
    unlock_token: bytes | None = None
    awaiting_configuration: bool = False


@dataclass(frozen=True)
class CheckOut(CheckinMessage):
    pass


@dataclass(frozen=True)
class DeclarativeManagement(CheckinMessage):
    """A declarative-management request: `endpoint` is tokens, declaration-items, status or
    declaration/<kind>/<identifier>; `data` the JSON body (the status report)."""

    endpoint: str = ""
    data: bytes | None = None


_STR = str
_CHECKIN_SPEC = {
    # key: (type, required)
    "Authenticate": {
        "MessageType": (_STR, True), "Topic": (_STR, True), "UDID": (_STR, True),
        "BuildVersion": (_STR, False), "OSVersion": (_STR, False), "ProductName": (_STR, False),
        "SerialNumber": (_STR, False), "IMEI": (_STR, False), "MEID": (_STR, False),
        "DeviceName": (_STR, False), "Model": (_STR, False), "ModelName": (_STR, False),
    },
    "TokenUpdate": {
        "MessageType": (_STR, True), "Topic": (_STR, True), "UDID": (_STR, True),
        "Token": (bytes, True), "PushMagic": (_STR, True), "UnlockToken": (bytes, False),
        "AwaitingConfiguration": (bool, False),
    },
    "CheckOut": {"MessageType": (_STR, True), "Topic": (_STR, True), "UDID": (_STR, True)},
    # No Topic here: Apple's DeclarativeManagement check-in does not carry one.
    "DeclarativeManagement": {"MessageType": (_STR, True), "UDID": (_STR, True), "Endpoint": (_STR, True),
                              "Data": (bytes, False)},
}

CHECKIN_TYPES = tuple(_CHECKIN_SPEC)

# Lengths of what a device sends, as stored (mdm.models.Device). Identity and push keys
# that are too long are refused: a truncated serial or PushMagic would be a different one.
# Descriptive keys are truncated with a log line.
REFUSE_LONGER = {"Topic": 255, "PushMagic": 200, "SerialNumber": 64, "IMEI": 32, "MEID": 32}
TRUNCATE_LONGER = {"DeviceName": 255, "Model": 64, "ModelName": 128, "ProductName": 64, "OSVersion": 32,
                   "BuildVersion": 32}


def clip(key: str, value: str) -> str:
    """A device-sent descriptive string cut to what its column holds (logged)."""
    limit = TRUNCATE_LONGER.get(key) or REFUSE_LONGER.get(key)
    if limit is not None and len(value) > limit:
        log.warning("device sent a %s of %d characters; stored truncated to %d", key, len(value), limit)
        return value[:limit]
    return value


def _check_lengths(message_type: str, body: dict) -> None:
    for key, limit in REFUSE_LONGER.items():
        value = body.get(key)
        if isinstance(value, str) and len(value) > limit:
            raise ProtocolError(f"{message_type}: {key} longer than {limit} characters")
    for key in TRUNCATE_LONGER:
        if isinstance(body.get(key), str):
            body[key] = clip(key, body[key])


def _check_keys(message_type: str, body: dict, spec: dict) -> None:
    for key, (kind, required) in spec.items():
        if key not in body:
            if required:
                raise ProtocolError(f"{message_type}: required key {key} is missing")
            continue
        value = body[key]
        if kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise ProtocolError(f"{message_type}: key {key} must be {kind.__name__}")


def parse_checkin(body: bytes, *, max_bytes: int = 2 * 1024 * 1024) -> CheckinMessage:
    try:
        msg = plists.loads(body, max_bytes=max_bytes)
    except plists.PlistError as exc:
        raise ProtocolError(str(exc)) from None
    message_type = msg.get("MessageType")
    if not isinstance(message_type, str):
        raise ProtocolError("MessageType is missing")
    if message_type not in _CHECKIN_SPEC:
        raise ProtocolError(f"unsupported MessageType {message_type[:64]!r}")
    _check_keys(message_type, msg, _CHECKIN_SPEC[message_type])
    _check_lengths(message_type, msg)
    if "UserID" in msg or "UserShortName" in msg or "EnrollmentUserID" in msg:
        # User channel (Shared iPad) is not used by this office's 1:1 iPads.
        raise ProtocolError("user-channel check-ins are not supported")
    udid = msg["UDID"]
    if not UDID_RE.match(udid):
        raise ProtocolError("UDID has an invalid format")
    common = dict(message_type=message_type, udid=udid, topic=msg.get("Topic", ""), raw=msg)
    if message_type == "Authenticate":
        return Authenticate(**common)
    if message_type == "TokenUpdate":
        token = msg["Token"]
        if not 16 <= len(token) <= 100:
            raise ProtocolError("TokenUpdate: Token has an invalid length")
        return TokenUpdate(
            **common,
            token=token,
            push_magic=msg["PushMagic"],
            unlock_token=msg.get("UnlockToken"),
            awaiting_configuration=bool(msg.get("AwaitingConfiguration", False)),
        )
    if message_type == "DeclarativeManagement":
        endpoint = msg["Endpoint"]
        if not endpoint or len(endpoint) > 300:
            raise ProtocolError("DeclarativeManagement: Endpoint is empty or too long")
        return DeclarativeManagement(**common, endpoint=endpoint, data=msg.get("Data"))
    return CheckOut(**common)


# ---------------------------------------------------------------- command responses

RESPONSE_STATUSES = ("Idle", "Acknowledged", "Error", "CommandFormatError", "NotNow")


@dataclass(frozen=True)
class CommandResponse:
    udid: str
    status: str
    command_uuid: str | None
    raw: dict = field(repr=False)

    @property
    def error_chain(self) -> list | None:
        chain = self.raw.get("ErrorChain")
        return chain if isinstance(chain, list) else None

    def result(self) -> dict:
        """The response without the envelope keys: what the command returned."""
        return {k: v for k, v in self.raw.items() if k not in ("UDID", "Status", "CommandUUID", "ErrorChain")}


def parse_command_response(body: bytes, *, max_bytes: int = 2 * 1024 * 1024) -> CommandResponse:
    try:
        msg = plists.loads(body, max_bytes=max_bytes)
    except plists.PlistError as exc:
        raise ProtocolError(str(exc)) from None
    status = msg.get("Status")
    if status not in RESPONSE_STATUSES:
        raise ProtocolError("Status missing or not one of " + ", ".join(RESPONSE_STATUSES))
    udid = msg.get("UDID")
    if not isinstance(udid, str) or not UDID_RE.match(udid):
        raise ProtocolError("UDID missing or invalid")
    if "UserID" in msg or "EnrollmentUserID" in msg:
        raise ProtocolError("user-channel connections are not supported")
    command_uuid = msg.get("CommandUUID")
    if status != "Idle":
        if not isinstance(command_uuid, str) or not command_uuid or len(command_uuid) > 64:
            raise ProtocolError(f"{status} response without a valid CommandUUID")
    if "ErrorChain" in msg and not isinstance(msg["ErrorChain"], list):
        raise ProtocolError("ErrorChain must be an array")
    return CommandResponse(udid=udid, status=status, command_uuid=command_uuid, raw=msg)


# ---------------------------------------------------------------- commands

DEVICE_INFORMATION_QUERIES = [
    "UDID", "DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model", "ModelNumber",
    "ProductName", "SerialNumber", "DeviceCapacity", "AvailableDeviceCapacity", "BatteryLevel",
    "IMEI", "MEID", "IsSupervised", "IsDeviceLocatorServiceEnabled", "IsActivationLockEnabled",
    "IsCloudBackupEnabled", "IsMDMLostModeEnabled", "WiFiMAC", "BluetoothMAC", "AwaitingConfiguration",
    "SupplementalBuildVersion", "SupplementalOSVersionExtra", "LastCloudBackupDate", "TimeZone",
]

# request type -> {key: (python type, required)}; anything else is refused.
_COMMAND_SPEC: dict[str, dict[str, tuple[type, bool]]] = {
    "DeviceInformation": {"Queries": (list, True)},
    "SecurityInfo": {},
    "ProfileList": {"ManagedOnly": (bool, False)},
    "CertificateList": {"ManagedOnly": (bool, False)},
    "InstalledApplicationList": {"Identifiers": (list, False), "ManagedAppsOnly": (bool, False)},
    "DeviceLock": {"PIN": (str, False), "Message": (str, False), "PhoneNumber": (str, False)},
    "EnableLostMode": {"Message": (str, False), "PhoneNumber": (str, False), "Footnote": (str, False)},
    "DisableLostMode": {},
    "DeviceLocation": {},
    "EraseDevice": {"PIN": (str, False), "PreserveDataPlan": (bool, False), "DisallowProximitySetup": (bool, False)},
    "RestartDevice": {"NotifyUser": (bool, False)},
    "ShutDownDevice": {},
    "InstallProfile": {"Payload": (bytes, True)},
    "RemoveProfile": {"Identifier": (str, True)},
    "ClearPasscode": {"UnlockToken": (bytes, True)},
    # Turns declarative management on (first use) or makes the device sync; Data = the tokens JSON.
    "DeclarativeManagement": {"Data": (bytes, False)},
    "InstallApplication": {"iTunesStoreID": (int, False), "Identifier": (str, False), "ManifestURL": (str, False),
                           "ManagementFlags": (int, False), "Configuration": (dict, False), "Options": (dict, False),
                           "ChangeManagementState": (str, False)},
    "ManagedApplicationList": {"Identifiers": (list, False)},
    "RemoveApplication": {"Identifier": (str, True)},
    "Settings": {"Settings": (list, True)},
    "ScheduleOSUpdate": {"Updates": (list, True)},
    # Automated Device Enrollment: releases an iPad held in Setup Assistant (await_device_configured).
    "DeviceConfigured": {},
}

COMMAND_TYPES = tuple(_COMMAND_SPEC)

# The one list of command keys that carry secrets: kept only until the device has answered
# (or the command is cancelled), never shown by the API or console, never logged. Data
# values of high entropy (profiles with keys, the UnlockToken) leave their SHA-256 behind;
# short strings (PINs) leave nothing, since a hash of six digits is no protection.
SECRET_KEYS: dict[str, tuple[str, ...]] = {
    "InstallProfile": ("Payload",),
    "ClearPasscode": ("UnlockToken",),
    "DeviceLock": ("PIN",),
    "EraseDevice": ("PIN",),
}
INVENTORY_COMMANDS = ("DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList", "InstalledApplicationList")
DESTRUCTIVE_COMMANDS = ("EraseDevice", "DeviceLock", "EnableLostMode", "RestartDevice", "ShutDownDevice", "ClearPasscode")


def default_params(request_type: str) -> dict:
    if request_type == "DeviceInformation":
        return {"Queries": list(DEVICE_INFORMATION_QUERIES)}
    if request_type == "ProfileList":
        return {"ManagedOnly": False}
    if request_type == "CertificateList":
        return {"ManagedOnly": False}
    return {}


def new_command_uuid() -> str:
    """A CommandUUID as the server writes them (upper-case UUID4)."""
    return str(uuidlib.uuid4()).upper()


def build_command(request_type: str, params: dict | None = None, command_uuid: str | None = None) -> tuple[str, bytes]:
    """Return (CommandUUID, plist bytes) for a command, validating its keys."""
    spec = _COMMAND_SPEC.get(request_type)
    if spec is None:
        raise ProtocolError(f"unsupported RequestType {request_type!r}; allowed: {', '.join(COMMAND_TYPES)}")
    params = dict(default_params(request_type) if params is None else params)
    unknown = set(params) - set(spec)
    if unknown:
        raise ProtocolError(f"{request_type}: unknown key(s) {', '.join(sorted(unknown))}")
    _check_keys(request_type, params, spec)
    if request_type == "DeviceLock" and "PIN" in params and not re.fullmatch(r"\d{6}", params["PIN"]):
        raise ProtocolError("DeviceLock: PIN must be six digits")
    if request_type == "EraseDevice" and "PIN" in params and not re.fullmatch(r"\d{6}", params["PIN"]):
        raise ProtocolError("EraseDevice: PIN must be six digits")
    if request_type == "EnableLostMode" and not ("Message" in params or "PhoneNumber" in params):
        raise ProtocolError("EnableLostMode: Message or PhoneNumber is required")
    if request_type == "InstallApplication" and ("ManifestURL" in params) == ("iTunesStoreID" in params):
        raise ProtocolError("InstallApplication: give exactly one of ManifestURL and iTunesStoreID")
    if request_type == "DeviceInformation" and not all(isinstance(q, str) for q in params["Queries"]):
        raise ProtocolError("DeviceInformation: Queries must be an array of strings")
    command_uuid = command_uuid or new_command_uuid()
    body = {"CommandUUID": command_uuid, "Command": {"RequestType": request_type, **params}}
    return command_uuid, plists.dumps(body)


def parse_queued_command(data: bytes) -> dict:
    """The command dictionary of a stored command plist (for display)."""
    return plists.loads(data)["Command"]
