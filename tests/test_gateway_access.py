"""The gateway's precomputed per-device access state (issue: fast paths at 10,000 iPads).

The decision is a lookup: leader, verdict, grace deadline and reasons are written to
gateway_device_access in the same transaction as the change that alters them, and never by a
transaction that rolls back; a device without a row gets one on its first request.
"""
from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from document_gateway import service
from document_gateway.models import DeviceAccess
from mdm.models import Device
from tests.test_gateway import refresh, verdict_state, world  # noqa: F401 - fixtures
from tests.test_gateway import gw  # noqa: F401


def access_row(server, udid) -> DeviceAccess | None:
    with server.session() as s:
        device_id = s.scalar(select(Device.id).where(Device.udid == udid))
        row = s.get(DeviceAccess, device_id)
        if row is not None:
            s.expunge(row)
        return row


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_access_state_follows_verdict_assignment_and_leader(world):  # noqa: F811
    row = access_row(world.server, world.sim.udid)
    assert (row.verdict_state, row.leader_id, row.leader_active, row.leader_role) == (
        "compliant", world.leader["id"], True, "director")
    assert world.ipad.get(f"/docs/{world.doc['id']}").status_code == 200

    world.sim.state.passcode_present = False
    refresh(world.admin, world.sim)
    row = access_row(world.server, world.sim.udid)
    assert row.verdict_state == "non_compliant" and "Thiết bị chưa đặt mật mã mở khoá" in " ".join(row.reasons_vi)
    r = world.ipad.get(f"/docs/{world.doc['id']}?lang=en", headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "verdict_non_compliant"

    world.sim.state.passcode_present = True
    refresh(world.admin, world.sim)
    assert access_row(world.server, world.sim.udid).verdict_state == "compliant"
    # The leader is deactivated: every iPad of theirs is denied at once.
    r = world.admin.patch(f"/api/v1/leaders/{world.leader['id']}", json={"active": False})
    assert r.status_code == 200, r.text
    assert access_row(world.server, world.sim.udid).leader_active is False
    r = world.ipad.get(f"/docs/{world.doc['id']}", headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "leader_inactive"
    # Returned: no leader any more.
    assert world.admin.delete(f"/api/v1/devices/{world.sim.udid}/assignment").status_code == 200
    assert access_row(world.server, world.sim.udid).leader_id is None
    r = world.ipad.get(f"/docs/{world.doc['id']}", headers={"Accept": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "not_assigned"


def test_rolled_back_change_leaves_the_access_state_alone(world):  # noqa: F811
    before = access_row(world.server, world.sim.udid)
    with pytest.raises(RuntimeError, match="abandoned"):
        with world.server.session() as s:
            device = s.scalar(select(Device).where(Device.udid == world.sim.udid))
            service.unassign_device(s, device, by="test")
            raise RuntimeError("abandoned")
    after = access_row(world.server, world.sim.udid)
    assert (after.leader_id, after.updated_at) == (before.leader_id, before.updated_at)
    assert world.ipad.get(f"/docs/{world.doc['id']}").status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_device_without_access_row_is_decided_and_gets_one(world):  # noqa: F811
    with world.server.session() as s:
        s.execute(delete(DeviceAccess))
    assert access_row(world.server, world.sim.udid) is None
    assert world.ipad.get(f"/docs/{world.doc['id']}").status_code == 200
    row = access_row(world.server, world.sim.udid)
    assert (row.verdict_state, row.leader_id) == ("compliant", world.leader["id"])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_many_devices_refreshed_at_once_get_what_one_by_one_gives(world):  # noqa: F811
    """A bulk evaluation's commit refreshes hundreds of access states in one statement over column
    arrays (PostgreSQL); it writes exactly what the per-device upsert writes, leader and reasons included."""
    import datetime as dt

    from compliance.models import DeviceVerdict
    from ipad_mdm.db import utcnow

    server = world.server
    with server.session() as s:
        like = s.scalar(select(Device).where(Device.udid == world.sim.udid))
        ids = [like.id]
        now = utcnow()
        for i in range(11):
            d = Device(udid=f"ARRAY-{i:04d}", serial_number=f"ARR{i:05d}", unit_id=like.unit_id,
                       enrollment_state="enrolled", enrolled_at=now)
            s.add(d)
            s.flush()
            ids.append(d.id)
            state = ("compliant", "grace", "non_compliant")[i % 3]
            s.add(DeviceVerdict(device_id=d.id, state=state, since=now, evaluated_at=now,
                                grace_deadline=now + dt.timedelta(hours=5) if state == "grace" else None,
                                failing_rules=[] if state == "compliant" else [{"rule": "passcode_present"}],
                                reasons_vi=[] if state == "compliant" else [f"Lý do “{i}” — chưa đặt mật mã"],
                                reasons_en=[] if state == "compliant" else [f"Reason {i}"], policy_versions=[],
                                actions=[]))

    def snapshot():
        with server.session() as s:
            return {r.device_id: (r.leader_id, r.leader_name, r.leader_title, r.leader_role, r.leader_unit_id,
                                  r.leader_active, r.verdict_state, r.grace_deadline, r.unassessed, r.reasons_vi,
                                  r.reasons_en)
                    for r in s.scalars(select(DeviceAccess).where(DeviceAccess.device_id.in_(ids)))}

    with server.session() as s:
        service.refresh_access(s, ids)  # 12 devices: the array statement
    together = snapshot()
    with server.session() as s:
        s.execute(delete(DeviceAccess).where(DeviceAccess.device_id.in_(ids)))
    for device_id in ids:
        with server.session() as s:
            service.refresh_access(s, [device_id])  # one at a time: the per-row upsert
    one_by_one = snapshot()
    assert set(together) == set(ids) and together == one_by_one
    assert together[ids[0]][0] == world.leader["id"] and together[ids[0]][5] is True
    assert {v[6] for v in together.values()} == {"compliant", "grace", "non_compliant"}
    # And again over existing rows: the conflict branch updates them.
    with server.session() as s:
        s.get(DeviceVerdict, ids[1]).state = "blocked"
        service.refresh_access(s, ids)
    assert snapshot()[ids[1]][6] == "blocked"
