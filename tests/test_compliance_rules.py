"""Pure rule logic: version comparison, strictest union, immediate failures."""
from __future__ import annotations

import datetime as dt

import pytest

from compliance.action_specs import validate_actions
from compliance.checks import evaluate_rules
from compliance.rules import (CertFacts, DeviceFacts, PolicyInputError, merge_rules, parse_version,
                              validate_rules)

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def facts(**kw):
    base = dict(os_version="17.4.1", security_info={"PasscodePresent": True, "PasscodeCompliant": True,
                                                    "HardwareEncryptionCaps": 3},
                device_information={}, is_supervised=True,
                profile_list=[{"PayloadIdentifier": "vn.gov.vpcp.mdm.enroll"}], installed_applications=[],
                lost_mode_enabled=False, last_seen_at=NOW,
                identity=CertFacts(NOW + dt.timedelta(days=300), None))
    base.update(kw)
    return DeviceFacts(**base)


def run(rules, **kw):
    merged = merge_rules([({"policy_id": 1, "version": 1}, validate_rules(rules))])
    return evaluate_rules(merged, facts(**kw), NOW)


def test_versions_compare_numerically():
    assert parse_version("17.10") > parse_version("17.9")
    assert parse_version("17") == parse_version("17.0.0")
    assert parse_version("18.1 (22B83)") == (18, 1, 0)
    assert run([{"kind": "min_os_version", "version": "17.4"}]).failures == []
    out = run([{"kind": "min_os_version", "version": "17.10"}])
    assert out.failures[0].reason_en == "iPadOS 17.4.1 is below the minimum 17.10"
    assert run([{"kind": "max_os_version", "version": "17.4"}]).failures[0].reason_en.startswith("iPadOS 17.4.1 is above")


def test_union_takes_strictest_parameters():
    merged = merge_rules([
        ({"policy_id": 1, "version": 3}, validate_rules([{"kind": "min_os_version", "version": "17.0"},
                                                         {"kind": "last_checkin_within_hours", "hours": 72}])),
        ({"policy_id": 2, "version": 1}, validate_rules([{"kind": "min_os_version", "version": "18.2"},
                                                         {"kind": "last_checkin_within_hours", "hours": 24}])),
    ])
    by_kind = {r.kind: r for r in merged}
    assert by_kind["min_os_version"].params == {"version": "18.2"}
    assert by_kind["last_checkin_within_hours"].params == {"hours": 24}
    assert len(by_kind["min_os_version"].sources) == 2


def test_identity_certificate():
    rule = [{"kind": "identity_certificate_valid", "not_expiring_within_days": 30}]
    assert run(rule).failures == []
    revoked = run(rule, identity=CertFacts(NOW + dt.timedelta(days=300), NOW)).failures[0]
    assert revoked.immediate and "revoked" in revoked.reason_en
    expired = run(rule, identity=CertFacts(NOW - dt.timedelta(days=1), None)).failures[0]
    assert expired.immediate and "expired" in expired.reason_en
    soon = run(rule, identity=CertFacts(NOW + dt.timedelta(days=10), None)).failures[0]
    assert not soon.immediate and "expires within 30 days" in soon.reason_en


def test_mdm_profile_removed_is_immediate_and_unknown_without_inventory():
    out = run([{"kind": "mdm_profile_present"}], profile_list=[{"PayloadIdentifier": "other"}])
    assert out.immediate and out.failures[0].reason_vi == "Hồ sơ đăng ký MDM đã bị gỡ khỏi thiết bị"
    out = run([{"kind": "passcode_present"}], security_info=None)
    assert out.failures == [] and out.unknown[0].reason_en == "No SecurityInfo inventory reported yet"


def test_immediate_override():
    out = run([{"kind": "hardware_encryption", "immediate": True}], security_info={"HardwareEncryptionCaps": 1})
    assert out.immediate


def test_action_validation():
    assert validate_actions(["notify", {"type": "lost_mode", "footnote": "Phòng CNTT"}]) == [
        {"type": "notify"}, {"type": "lost_mode", "footnote": "Phòng CNTT"}]
    with pytest.raises(PolicyInputError, match="listed twice"):
        validate_actions(["notify", "notify"])
    with pytest.raises(PolicyInputError, match="recipients must be a list of e-mail"):
        validate_actions([{"type": "notify", "recipients": ["not-an-address"]}])
