"""Issue #22, item 3: the CA or profile-signing token gone, or its PIN wrong, on the production stack.

The keys are on real SoftHSM2 tokens of a store this test creates; pulling a token out is moving its
folder away (what SoftHSM2 sees when a token disappears), putting it back is moving it back. Nothing
is mocked: gunicorn's workers and the CLI open the tokens themselves. Checked: what needs the key
refuses with 503 naming the token (never a 500), nothing is stored for a refused action (the
enrollment token stays usable, no command queued), check-ins go on, one alert per outage and one note
when it is back, and everything works again without a restart."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest
from sqlalchemy import select

from ipad_mdm.security_events import SecurityEvent
from mdm.models import Command, Device
from tests.simulator import SimulatedIPad, SimulatorError
from tests.softhsm import SoftHsm
from tests.test_production_stack import BIN, ROOT, _assert_each_acknowledged_once, open_stack
from tests.test_profiles_api import IDENT, _payloads

CA_TOKEN, SIGNING_TOKEN = "ipad-ca-tok", "ipad-sign-tok"


@pytest.fixture
def token_stack(tmp_path):
    store = SoftHsm(tmp_path / "hsm", [CA_TOKEN, SIGNING_TOKEN])
    store.token(CA_TOKEN).generate_rsa("device-ca", bits=3072)
    store.token(SIGNING_TOKEN).generate_rsa("profile-signer")
    pin_file = tmp_path / "token.pin"
    pin_file.write_text(store.pin + "\n")
    pin_file.chmod(0o600)
    env = {"SOFTHSM2_CONF": str(store.conf_path)}
    for prefix, token, key in (("IPAD_MDM_CA", CA_TOKEN, "device-ca"),
                               ("IPAD_MDM_SIGNING", SIGNING_TOKEN, "profile-signer")):
        env.update({f"{prefix}_PKCS11_MODULE": store.module, f"{prefix}_PKCS11_TOKEN": token,
                    f"{prefix}_PKCS11_KEY": key, f"{prefix}_PKCS11_PIN_FILE": str(pin_file)})

    def keys_on_tokens(instance_dir):
        # The seeded demo CA and signer are files; this instance's keys are the tokens' (the
        # certificates are made for them when the instance is first opened).
        for name in ("ca/ca.pem", "ca/signer.pem", "ca/server.pem", "secrets/ca.key", "secrets/signer.key",
                     "secrets/server.key"):
            (instance_dir / name).unlink(missing_ok=True)

    with open_stack(tmp_path, prepare=keys_on_tokens, **env) as st:
        st.hsm, st.pin_file = store, pin_file
        assert not (st.instance_dir / "secrets" / "ca.key").exists()
        yield st


def _pull(stack, label):
    folder = stack.hsm.token_folder(label)
    away = stack.tmp / f"away-{label}"
    shutil.move(folder, away)
    return lambda: shutil.move(away, folder)


def _until(fetch, ok, attempts=60):
    """Retry `fetch` until `ok(result)`: the server rescans a missing token at most every 2 s.
    A bound for a server that never recovers, not a timing check."""
    for _ in range(attempts):
        result = fetch()
        if ok(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"never recovered: {result}")


def _token_events(stack, kind):
    with stack.session() as s:
        return [e for e in s.scalars(select(SecurityEvent).where(SecurityEvent.kind == kind))]


def _refused_for_token(r: httpx.Response, token: str, purpose: str, reason: str = "token_absent"):
    assert r.status_code == 503, r.text
    body = r.json()
    assert (body["token"], body["purpose"], body["reason"]) == (token, purpose, reason), body
    assert token in body["error"] and token in body["error_vi"] and "Đề nghị" in body["error_vi"]
    assert r.headers["Retry-After"]


def test_tokens_pulled_or_pin_wrong_refuse_clearly_and_recover_without_restart(token_stack):
    stack = token_stack
    api_token = json.loads(subprocess.run([str(BIN / "ipad-mdm"), "api-token", "create", "--name", "ops", "--role",
                                           "it_admin", "--json"], env=stack.env, check=True, capture_output=True,
                                          text=True).stdout)["token"]
    api = httpx.Client(base_url=stack.url, verify=stack.verify, headers={"Authorization": f"Bearer {api_token}"},
                       timeout=60)
    first = SimulatedIPad(stack.url, verify=stack.verify)
    first.enroll(stack.enrollment_url())  # CA and signing keys on the tokens, both present
    stack.wait_provisioned(first)
    first.process_commands()
    r = api.post("/api/v1/profiles", json={"identifier": IDENT, "display_name": "Cấu hình cơ bản",
                                           "payloads": _payloads()})
    assert r.status_code == 201, r.text
    assert api.post(f"/api/v1/profiles/{IDENT}/assignments", json={"devices": [first.udid]}).status_code == 200

    # --- the profile-signing token is pulled out -------------------------------------------------
    commands_before = _command_count(stack)
    put_back = _pull(stack, SIGNING_TOKEN)
    enroll_url = stack.enrollment_url()
    http = httpx.Client(verify=stack.verify, timeout=60)
    for _ in range(4):  # several requests, spread over the workers: each refuses, one alert in all
        _refused_for_token(http.get(enroll_url), SIGNING_TOKEN, "signing")
    _refused_for_token(api.post(f"/api/v1/profiles/{IDENT}/install", json={}), SIGNING_TOKEN, "signing")
    assert _command_count(stack) == commands_before  # nothing queued for a refused action
    cli = subprocess.run([str(BIN / "ipad-mdm"), "vpn", "provision", first.udid], env=stack.env, capture_output=True,
                         text=True, cwd=ROOT)
    assert cli.returncode == 75 and SIGNING_TOKEN in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
    assert first.connect().status_code == 200  # check-ins need no private key: the fleet stays managed
    alerts = _until(lambda: _token_events(stack, "signing_token_unavailable"), bool)  # recorded on its own thread
    assert len(alerts) == 1 and alerts[0].details["token"] == SIGNING_TOKEN and alerts[0].severity == "high"
    assert SIGNING_TOKEN in alerts[0].summary_vi and "Đề nghị" in alerts[0].summary_vi

    put_back()
    r = _until(lambda: http.get(enroll_url), lambda r: r.status_code == 200)  # the same enrollment token
    assert r.headers["content-type"].startswith("application/x-apple-aspen-config")
    # The API's connection may be served by another worker, which rescans on its own 2 s clock.
    r = _until(lambda: api.post(f"/api/v1/profiles/{IDENT}/install", json={}), lambda r: r.status_code != 503)
    assert r.status_code == 202, r.text
    installed = [c["Command"]["RequestType"] for c in first.process_commands()]
    assert "InstallProfile" in installed
    assert len(_until(lambda: _token_events(stack, "signing_token_restored"), bool)) == 1

    # --- the CA token is pulled out: the profile still downloads, SCEP refuses ---------------------
    second = SimulatedIPad(stack.url, verify=stack.verify)
    put_back = _pull(stack, CA_TOKEN)
    r = second.fetch_profile(stack.enrollment_url())
    assert r.status_code == 200, r.text
    second.install_enrollment_profile(r.content)
    with pytest.raises(SimulatorError, match=CA_TOKEN):
        second.scep_enroll()
    ca_alerts = _until(lambda: _token_events(stack, "signing_token_unavailable"), lambda a: len(a) == 2)
    assert [a.details["token"] for a in ca_alerts] == [SIGNING_TOKEN, CA_TOKEN]
    assert ca_alerts[1].details["purpose"] == "ca"
    put_back()
    # The iPad retries the install of the profile it holds: the same SCEP challenge is still good.
    _until(lambda: _scep_or_none(second), lambda cert: cert is not None)
    assert second.authenticate().status_code == 200 and second.token_update().status_code == 200
    stack.wait_provisioned(second)
    second.process_commands()

    # --- the PIN is wrong when the server starts --------------------------------------------------
    stack.web.terminate()
    stack.web.wait(timeout=30)
    stack.pin_file.write_text("000000\n")
    stack.start_web()  # starts: check-ins and documents need no token
    assert first.connect().status_code == 200
    r = http.get(stack.enrollment_url())
    _refused_for_token(r, SIGNING_TOKEN, "signing", reason="pin_rejected")
    assert "000000" not in r.text and stack.hsm.pin not in r.text
    stack.pin_file.write_text(stack.hsm.pin + "\n")  # corrected: no restart
    third = SimulatedIPad(stack.url, verify=stack.verify)
    third.enroll(stack.enrollment_url())
    stack.wait_provisioned(third)
    third.process_commands()

    # Nothing lost, no 500, no secret in the log.
    with stack.session() as s:
        udids = set(s.scalars(select(Device.udid).where(Device.enrollment_state == "enrolled")))
        uuids = list(s.scalars(select(Command.uuid)))
    assert {first.udid, second.udid, third.udid} <= udids
    _assert_each_acknowledged_once(stack, uuids)
    web_log = (stack.tmp / "web.log").read_text()
    assert " 500 " not in web_log and "Traceback" not in web_log
    assert stack.hsm.pin not in web_log and "000000" not in web_log
    for sim in (first, second, third):
        sim.close()
    http.close()
    api.close()


def _command_count(stack) -> int:
    with stack.session() as s:
        return len(list(s.scalars(select(Command.id))))


def _scep_or_none(sim):
    try:
        return sim.scep_enroll()
    except SimulatorError:
        return None
