"""An update-enforcement declaration brings iPads to the target version: declaratively on iPads
that support it, by ScheduleOSUpdate on the others; progress and failures per iPad."""
from __future__ import annotations

import json

import pytest

from tests.test_ddm import UPDATE, create, device_row
from tests.test_gateway import api
from tests.test_mdm_api_cli import _cli


def older_ipad(server, *, error=None):
    sim = server.simulator()
    sim.state.os_version, sim.state.build_version, sim.ddm.supported = "16.7.10", "20H350", False
    sim.state.os_update_error = error
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    return sim


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_enforcement_brings_ipads_to_the_target(server):
    admin = api(server, "it_admin")
    create(admin, UPDATE, assign={"all": True})
    ddm = server.simulator()
    ddm.ddm.auto_update = True
    ddm.enroll(server.enrollment_url())
    server.wait_pushes()
    ddm.process_commands()
    assert device_row(server, ddm.udid).os_version == "18.2"  # reported in its status, at once

    old = older_ipad(server)  # ScheduleOSUpdate at enrollment, then DeviceInformation shows 18.2
    sent = [c["Command"] for c in old.handled if c["Command"]["RequestType"] == "ScheduleOSUpdate"]
    assert sent and sent[0]["Updates"] == [{"ProductVersion": "18.2", "InstallAction": "InstallASAP"}]
    assert device_row(server, old.udid).os_version == "18.2"

    failing = older_ipad(server, error="Not enough storage")
    r = admin.get("/api/v1/os-updates")
    assert r.status_code == 200
    rows = {d["udid"]: d for d in r.json()["enforcements"][0]["devices"]}
    assert rows[ddm.udid] == {**rows[ddm.udid], "state": "at_target", "path": "declaration"}
    assert rows[old.udid]["state"] == "at_target" and rows[old.udid]["path"] == "command"
    assert rows[failing.udid]["state"] == "failed" and "Not enough storage" in rows[failing.udid]["failure"]
    for sim in (ddm, old, failing):
        sim.close()


def test_cli_shows_os_update_progress(server):
    create(api(server, "it_admin"), UPDATE, assign={"all": True})
    sim = older_ipad(server, error="Not enough storage")
    out = json.loads(_cli(server, "declaration", "os-updates").stdout)
    assert out[0]["target_version"] == "18.2" and out[0]["devices"][0]["state"] == "failed"
    sim.close()
