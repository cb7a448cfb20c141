"""A device's facts, as the rules read them (pure; no storage).

facts_of turns a device's columns and inventory answers into DeviceFacts: inventory reported before
the current enrollment does not count, and a declarative status report newer than an answer takes
its place. reduce_inventory keeps, of the inventory, exactly what facts_of reads (compliance.digests
keeps that instead of the answers themselves).
"""
from __future__ import annotations

import datetime as dt

from mdm import Device, ddm

from .rules import CertFacts, DeviceFacts


def _fresh(value, at: dt.datetime | None, since: dt.datetime | None):
    """Inventory reported before the current enrollment does not count."""
    if value is None or since is None:
        return value
    return value if at is not None and at >= since else None


# The declarative status items the rules read (and all reduce_inventory keeps of a status report).
STATUS_ITEMS = ("device.operating-system.version", "passcode.is-present", "passcode.is-compliant", "app.managed.list")
# The inventory keys the rules read (and all reduce_inventory keeps of each answer).
_SECURITY_KEYS = ("PasscodePresent", "PasscodeCompliant", "PasscodeCompliantWithProfiles", "HardwareEncryptionCaps")
_APP_KEYS = ("Identifier", "ShortVersion", "Version")
# Stands for an inventory value that is neither absent nor of the expected type (the rules call it
# not reported, by its type): any non-None value that is not a dict or list does.
_MALFORMED = False
# What the reduction is: part of every kept reduced inventory's digest (compliance.digests), so one
# kept by an earlier reduction is never used by a later one. Change the format number with the code
# of reduce_inventory; the kept lists change it themselves.
REDUCTION = repr(("reduced inventory 1", STATUS_ITEMS, _SECURITY_KEYS, _APP_KEYS))


def reduce_inventory(device) -> dict:
    """What facts_of and the rules read of the device's inventory columns, and nothing else: the
    compliance run keeps this (compliance.bulk, InventoryDigest) instead of decoding kilobytes of
    JSON per device and run. Every inventory key facts_of or a rule reads must be kept here; the
    test test_compliance_rules.test_reduced_inventory_decides_like_the_full_one checks them all."""
    status = device.ddm_status
    return {
        "device_information": None if device.device_information is None else True,  # read: reported or not
        "security_info": _reduced(device.security_info, dict, lambda si: {k: si[k] for k in _SECURITY_KEYS if k in si}),
        "profile_list": _reduced(device.profile_list, list, lambda profiles: [
            {"PayloadIdentifier": e.get("PayloadIdentifier")} for e in profiles if isinstance(e, dict)]),
        "installed_applications": _reduced(device.installed_applications, list, lambda apps: [
            {k: a.get(k) for k in _APP_KEYS} for a in apps if isinstance(a, dict)]),
        "ddm_status": ({n: status[n] for n in STATUS_ITEMS if n in status} if isinstance(status, dict) and status
                       else None),
    }


def _reduced(value, kind: type, reduce):
    """An inventory answer reduced: absent stays absent (None), one of the expected type is reduced,
    anything else is _MALFORMED."""
    if value is None:
        return None
    return reduce(value) if isinstance(value, kind) else _MALFORMED


def _status(device: Device, name: str, since: dt.datetime | None):
    """(value, at) of a declarative status item, None when not reported in this enrollment."""
    if name not in STATUS_ITEMS:
        raise ValueError(f"the rules read status item {name}: add it to STATUS_ITEMS")
    value, at = ddm.status_item(device.ddm_status, name)
    # An item without a readable time cannot be weighed against the inventory answers: it does not count.
    if value is None or at is None or (since is not None and at < since):
        return None, None
    return value, at


def _passcode(device: Device, si: dict | None, inventory_since) -> tuple[bool | None, bool | None]:
    """Passcode present / compliant from the newer of SecurityInfo and the status report."""
    present = compliant = None
    if isinstance(si, dict):
        present = si.get("PasscodePresent") is True
        compliant = si.get("PasscodeCompliant") is True and si.get("PasscodeCompliantWithProfiles") is not False
    si_at = device.security_info_at if isinstance(si, dict) else None
    for name, slot in (("passcode.is-present", 0), ("passcode.is-compliant", 1)):
        value, at = _status(device, name, inventory_since)
        if isinstance(value, bool) and (si_at is None or at >= si_at):
            if slot == 0:
                present = value
            else:
                compliant = value
    return present, compliant


def _installed_apps(device: Device, inventory_since) -> list | None:
    """InstalledApplicationList, with the managed apps a declarative iPad reports (app.managed.list)
    taking precedence when that report is newer."""
    listed = _fresh(device.installed_applications, device.installed_applications_at, inventory_since)
    managed, at = _status(device, "app.managed.list", inventory_since)
    if not isinstance(managed, list):
        return listed
    newer = listed is None or device.installed_applications_at is None or at >= device.installed_applications_at
    by_id = {a.get("Identifier"): a for a in (listed if isinstance(listed, list) else ()) if isinstance(a, dict)}
    for e in managed:
        if isinstance(e, dict) and e.get("state") == "managed" and (newer or e.get("identifier") not in by_id):
            by_id[e.get("identifier")] = {"Identifier": e.get("identifier"), "ShortVersion": e.get("short-version"),
                                          "Version": e.get("version")}
    return list(by_id.values())


def facts_of(device: Device, identity: CertFacts | None, inventory_since: dt.datetime | None,
             declarative_facts=None, vpn_facts=None) -> DeviceFacts:
    di = _fresh(device.device_information, device.device_information_at, inventory_since)
    si = _fresh(device.security_info, device.security_info_at, inventory_since)
    status_os, _ = _status(device, "device.operating-system.version", inventory_since)
    present, compliant = _passcode(device, si, inventory_since)
    apps = _installed_apps(device, inventory_since)
    return DeviceFacts(
        os_version=device.os_version if (inventory_since is None or di is not None or status_os) else None,
        security_info=si,
        passcode_present=present,
        passcode_compliant=compliant,
        enforcement=getattr(declarative_facts, "enforcement", None),
        failed_declarations=list(getattr(declarative_facts, "failed", None) or []),
        device_information=di,
        is_supervised=device.is_supervised if (inventory_since is None or di is not None) else None,
        profile_list=_fresh(device.profile_list, device.profile_list_at, inventory_since),
        installed_applications=apps,
        lost_mode_enabled=bool(device.lost_mode_enabled),
        last_seen_at=device.last_seen_at,
        identity=identity,
        enrollment_state=device.enrollment_state,
        vpn=vpn_facts,
    )
