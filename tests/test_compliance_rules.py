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


def test_every_rule_kind_has_its_check():
    """A kind the policy API accepts but the evaluation cannot check would fail every device's evaluation."""
    from compliance.checks import _CHECKS
    from compliance.rules import RULE_KINDS

    assert set(_CHECKS) == set(RULE_KINDS)


# ------------------------------------------------------------------ the reduced inventory
_IDS = ["vn.gov.vpcp.mdm.enroll", "vn.gov.vpcp.vpn", "com.example.game", "vn.gov.vpcp.docs", "other"]
_ALL_RULES = [
    {"kind": "min_os_version", "version": "17.0"}, {"kind": "max_os_version", "version": "19.0"},
    {"kind": "passcode_present"}, {"kind": "passcode_compliant"}, {"kind": "hardware_encryption"},
    {"kind": "supervised"}, {"kind": "required_profiles", "identifiers": ["vn.gov.vpcp.vpn"]},
    {"kind": "identity_certificate_valid", "not_expiring_within_days": 14},
    {"kind": "last_checkin_within_hours", "hours": 72}, {"kind": "not_in_lost_mode"}, {"kind": "mdm_profile_present"},
    {"kind": "disallowed_apps", "bundle_ids": ["com.example.game"]},
    {"kind": "app_installed", "bundle_ids": ["vn.gov.vpcp.docs"]},
    {"kind": "app_min_version", "bundle_ids": ["vn.gov.vpcp.docs"]}, {"kind": "os_update_deadline"},
    {"kind": "vpn_provider_in", "providers": ["wireguard"]}, {"kind": "vpn_seen_within_hours", "hours": 24},
    {"kind": "declarations_active"},
]


def _inventories():
    """Inventory columns as an iPad (or a broken one) may leave them: absent, malformed, or answers
    with the keys the rules read among others they do not."""
    from hypothesis import strategies as st

    from compliance.facts import STATUS_ITEMS

    junk = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())
    when = st.one_of(st.none(), st.integers(-3, 3).map(lambda h: NOW + dt.timedelta(hours=h)))
    security = st.fixed_dictionaries({}, optional={
        "PasscodePresent": junk, "PasscodeCompliant": junk, "PasscodeCompliantWithProfiles": junk,
        "HardwareEncryptionCaps": st.one_of(st.integers(0, 7), junk), "FDE_Enabled": junk})
    profile = st.one_of(junk, st.fixed_dictionaries({}, optional={
        "PayloadIdentifier": st.one_of(st.sampled_from(_IDS), junk), "PayloadUUID": st.text(max_size=4)}))
    app = st.one_of(junk, st.fixed_dictionaries({}, optional={
        "Identifier": st.one_of(st.sampled_from(_IDS), junk), "ShortVersion": st.one_of(st.sampled_from(["1.0", "2.1"]), junk),
        "Version": st.one_of(st.sampled_from(["1", "2.0.1"]), junk), "Name": st.text(max_size=4)}))
    managed = st.lists(st.fixed_dictionaries({}, optional={
        "identifier": st.sampled_from(_IDS), "state": st.sampled_from(["managed", "failed"]),
        "short-version": st.sampled_from(["1.0", "2.1"]), "version": st.sampled_from(["1", "2"])}), max_size=3)
    item_value = st.one_of(junk, st.sampled_from(["16.4", "18.1"]), managed)
    item = st.fixed_dictionaries({"value": item_value}, optional={
        "at": st.one_of(when.map(lambda w: w.isoformat() if w else None), st.just("not a time"))})
    status = st.one_of(st.none(), st.dictionaries(st.sampled_from([*STATUS_ITEMS, "management.client-capabilities"]),
                                                  item, max_size=5))
    return st.fixed_dictionaries({
        "device_information": st.one_of(st.none(), st.just({"OSVersion": "18.1"})),
        "security_info": st.one_of(st.none(), junk, security),
        "profile_list": st.one_of(st.none(), junk, st.lists(profile, max_size=4)),
        "installed_applications": st.one_of(st.none(), junk, st.lists(app, max_size=4)),
        "ddm_status": status,
        **{f"{name}_at": when for name in ("device_information", "security_info", "profile_list",
                                           "installed_applications")},
        "inventory_since": when,
    })


def test_reduced_inventory_decides_like_the_full_one():
    """The scheduled run evaluates the reduced inventory it keeps (compliance.digests), not the
    answers themselves: for any inventory, every rule kind must decide the same on both."""
    from types import SimpleNamespace

    from hypothesis import given, settings

    from compliance.facts import facts_of, reduce_inventory

    merged = merge_rules([({"policy_id": 1, "version": 1}, validate_rules(_ALL_RULES))])

    @settings(max_examples=400, deadline=None)
    @given(_inventories())
    def check(inv):
        since = inv.pop("inventory_since")
        base = dict(id=1, unit_id=None, enrollment_state="enrolled", os_version="18.1", is_supervised=True,
                    lost_mode_enabled=False, last_seen_at=NOW, **{k: v for k, v in inv.items() if k.endswith("_at")})
        full = SimpleNamespace(**base, **{k: v for k, v in inv.items() if not k.endswith("_at")})
        reduced = SimpleNamespace(**base, **reduce_inventory(full))
        outcomes = []
        for device in (full, reduced):
            f = facts_of(device, CertFacts(NOW + dt.timedelta(days=300), None), since, None, None)
            f.accepted_versions = {"vn.gov.vpcp.docs": "2.0"}
            out = evaluate_rules(merged, f, NOW)
            outcomes.append(([x.as_dict() for x in out.failures], [x.as_dict() for x in out.unknown], out.immediate))
        assert outcomes[0] == outcomes[1]

    check()


def test_an_app_version_that_is_not_a_number_is_not_an_accepted_one():
    """An iPad reporting the office app as "beta" (or nothing) fails app_min_version instead of
    failing its whole evaluation (which left the device without a new verdict)."""
    rules = [{"kind": "app_min_version", "bundle_ids": ["vn.gov.vpcp.docs"]}]
    merged = merge_rules([({"policy_id": 1, "version": 1}, validate_rules(rules))])
    for version, fails in (("beta", True), ("", True), ("1.9", True), ("2.0", False), ("2.0.1 (7)", False)):
        f = facts(installed_applications=[{"Identifier": "vn.gov.vpcp.docs", "ShortVersion": version}])
        f.accepted_versions = {"vn.gov.vpcp.docs": "2.0"}
        out = evaluate_rules(merged, f, NOW)
        assert bool(out.failures) is fails, version
    f = facts(installed_applications=[{"Identifier": "vn.gov.vpcp.docs", "ShortVersion": "beta"}])
    assert evaluate_rules(merged, f, NOW).failures == []  # no accepted release to hold it to
