"""pytest plugin: a real SoftHSM2 token store for PKCS#11 tests.

Enable it with ``pytest_plugins = ["tests.conftest_softhsm"]`` in
tests/conftest.py or ``pytest -p tests.conftest_softhsm``.

The store is session-scoped on purpose: SoftHSM2 reads its configuration and
token list only when the module is first initialised in the process (see
tests/softhsm.py), so all tokens are created once, up front.
"""
from __future__ import annotations

import pytest

from tests.softhsm import SoftHsm, SoftHsmToken

MAIN_TOKEN = "mdm-test"
# Never logged into by the test process except by the wrong-PIN tests:
# PKCS#11 login state is per process, so a token someone already logged into
# would accept any PIN.
PIN_TEST_TOKEN = "mdm-pin-test"
# A leader's signing USB token (tests/test_usb_tokens.py): a key pair and its certificates, read back
# by `ipad-mdm usb-token add --from-token`.
LEADER_TOKEN = "leader-usb"
TOKEN_LABELS = (MAIN_TOKEN, PIN_TEST_TOKEN, LEADER_TOKEN)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory) -> SoftHsm:
    # scripts/test installs softhsm2: a missing token library is a failure, not a skip.
    store = SoftHsm(tmp_path_factory.mktemp("softhsm"), TOKEN_LABELS)
    store.activate()
    return store


@pytest.fixture(scope="session")
def softhsm_token(softhsm) -> SoftHsmToken:
    """The main test token: ``.module``, ``.token_label``, ``.pin``, ``.so_pin``,
    ``.conf_path``, ``.generate_rsa(label)``, ``.generate_ec(label)``.

    Session-scoped, so key labels must be unique across the test session.
    """
    yield softhsm.token(MAIN_TOKEN)


@pytest.fixture(scope="session")
def softhsm_pin_token(softhsm) -> SoftHsmToken:
    """A second token reserved for login-failure tests."""
    yield softhsm.token(PIN_TEST_TOKEN)


@pytest.fixture(scope="session")
def softhsm_leader_token(softhsm) -> SoftHsmToken:
    yield softhsm.token(LEADER_TOKEN)
