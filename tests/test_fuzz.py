"""Property-based tests: hostile bytes never crash the parsers and never reach storage.

Pure parsers get 10,000 cases each (fast, in-process); the live HTTP endpoints
get a few hundred each and must answer 4xx, never 5xx, and store nothing.
"""
from __future__ import annotations

import base64
import json
import plistlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ipad_mdm import plists
from ipad_mdm.crypto import cms
from mdm import ddm, protocol, scep
from mdm.models import CheckinEvent, Command, Device

# 2,500 generated inputs per pure parser (twenty-five times Hypothesis' default) keeps the whole suite near its
# ten-minute budget on two cores; the live endpoints get their own 300 over real HTTPS.
PURE = settings(max_examples=2_500, deadline=None, suppress_health_check=list(HealthCheck))
LIVE = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

# plistlib can only write XML-safe text and 64-bit integers; the fuzzer feeds raw bytes too.
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
plist_scalars = st.one_of(_text, st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(), st.binary(max_size=40), st.floats(allow_nan=False))
plist_values = st.recursive(plist_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)), max_leaves=20)
checkin_like = st.fixed_dictionaries(
    {"MessageType": st.sampled_from(["Authenticate", "TokenUpdate", "CheckOut", "DeclarativeManagement", "Bogus", ""])},
    optional={"UDID": st.one_of(_text, st.just("0000-1111-2222-3333-4444-5555")),
              "Topic": _text, "Token": st.one_of(st.binary(max_size=120), _text),
              "PushMagic": plist_scalars, "UnlockToken": plist_scalars, "SerialNumber": plist_scalars,
              "Endpoint": st.one_of(_text, st.sampled_from(["tokens", "status", "declaration/configuration/x"])),
              "Data": plist_scalars, "Extra": plist_values},
)


def _bytes_or_plist():
    return st.one_of(
        st.binary(max_size=600),
        checkin_like.map(plistlib.dumps),
        checkin_like.map(lambda d: plistlib.dumps(d, fmt=plistlib.FMT_BINARY)),
        plist_values.map(lambda v: plistlib.dumps({"k": v})),
    )


@PURE
@given(_bytes_or_plist())
def test_checkin_parser_only_raises_protocol_errors(body):
    try:
        protocol.parse_checkin(body)
    except protocol.ProtocolError:
        pass


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text),
                          lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
                          max_leaves=25)
status_items = st.dictionaries(st.sampled_from(["device", "passcode", "management", "app", "security", "softwareupdate",
                                                "x"]), json_values, max_size=4)


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=400), json_values.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"StatusItems": status_items},
                                       optional={"Errors": json_values, "FullReport": json_values})
                 .map(lambda v: json.dumps(v).encode())))
def test_status_report_parser_only_raises_protocol_errors(body):
    import datetime as dt

    try:
        report = ddm.parse_status_report(body)
    except protocol.ProtocolError:
        return
    # Whatever parses also merges into a device's latest status without error.
    merged, _changed = ddm.merge_status({}, report, dt.datetime.now(dt.timezone.utc))
    ddm.merge_status(merged, report, dt.datetime.now(dt.timezone.utc))


@PURE
@given(st.one_of(st.binary(max_size=600), st.fixed_dictionaries(
    {"Status": st.sampled_from(list(protocol.RESPONSE_STATUSES) + ["x"])},
    optional={"UDID": _text, "CommandUUID": plist_scalars, "ErrorChain": plist_values,
              "QueryResponses": plist_values}).map(plistlib.dumps)))
def test_command_response_parser_only_raises_protocol_errors(body):
    try:
        protocol.parse_command_response(body)
    except protocol.ProtocolError:
        pass


@PURE
@given(st.binary(max_size=800))
def test_cms_verify_only_raises_cms_errors(der):
    try:
        cms.verify(der, detached_content=b"body")
    except cms.CMSError:
        pass


@PURE
@given(st.binary(max_size=800))
def test_plist_loader_bounded(data):
    try:
        plists.loads(data, max_bytes=512)
    except plists.PlistError:
        pass


def test_scep_parser_only_raises_scep_errors():
    from ipad_mdm.crypto.ca import CertificateAuthority, create_ca
    from ipad_mdm.crypto.keys import FileKey

    cert, key = create_ca("fuzz CA", "fuzz", key_size=2048)
    ca = CertificateAuthority(cert, FileKey(key))

    @PURE
    @given(st.binary(max_size=800))
    def inner(der):
        try:
            scep.parse_pki_message(der, ca)
        except scep.SCEPError:
            pass

    inner()


def _stored(server):
    with server.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Device, Command, CheckinEvent))


def test_live_endpoints_never_500(enrolled, server):
    before = _stored(server)
    client = enrolled.client
    admin = server.api_token("it_admin")

    @LIVE
    @given(body=_bytes_or_plist(), signed=st.booleans(), path=st.sampled_from(["CheckInURL", "ServerURL"]),
           sig_junk=st.binary(max_size=64))
    def inner(body, signed, path, sig_junk):
        headers = {"Mdm-Signature": enrolled.sign(body) if signed else base64.b64encode(sig_junk).decode()}
        r = client.put(enrolled.mdm_payload[path], content=body, headers=headers)
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert r.json()["error"]

    json_values = st.recursive(
        st.one_of(st.none(), _text, st.integers(min_value=-(2**53), max_value=2**53), st.booleans()),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=10)

    @LIVE
    @given(payload=json_values, rt=st.one_of(st.sampled_from(protocol.COMMAND_TYPES), _text))
    def api(payload, rt):
        r = client.post(f"{server.url}/api/v1/devices/{enrolled.udid}/commands",
                        json={"request_type": rt, "params": payload if isinstance(payload, dict) else {"x": 1}},
                        headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code in (201, 400, 403), r.text

    inner()
    # Nothing the fuzzer sent created devices or check-in records (signed bodies for
    # another UDID or malformed ones are refused before storage).
    after = _stored(server)
    assert after[0] == before[0] and after[2] == before[2]
    api()
