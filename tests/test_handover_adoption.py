"""Every enrolled iPad is in the handover workflow, whatever token it enrolled with (#18, item 2)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.test_console_support import client_for, seed

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def _records(server, device_id):
    from console.models import DeviceRecord

    with server.session() as s:
        return [(r.id, r.state, r.unit_id, r.serial_number)
                for r in s.scalars(select(DeviceRecord).where(DeviceRecord.device_id == device_id))]


def _device_id(server, udid):
    from mdm.models import Device

    with server.session() as s:
        return s.scalar(select(Device.id).where(Device.udid == udid))


def test_ipad_enrolled_with_a_cli_token_is_adopted_then_handed_over(server):
    world = seed(server)
    admin = client_for(server, "admin")
    sim = server.simulator()
    sim.enroll(server.enrollment_url())  # a token of no unit, as `enroll-token create` makes
    server.wait_pushes()
    sim.process_commands()
    device_id = _device_id(server, sim.udid)
    [(record_id, state, unit_id, serial)] = _records(server, device_id)
    assert (state, unit_id, serial) == ("enrolled", None, sim.serial)
    # The dashboard counts it (no more "managed 1, every handover column 0") and names the gap.
    home = admin.get("/console/").text
    assert 'id="no-unit-row"' in home and "Chưa xác định đơn vị" in home
    page = admin.get(f"/console/handover/{record_id}").text
    assert 'id="model-mismatch"' not in page  # nothing registered, nothing to disagree with
    assert "Thiết bị đã cài đặt MDM, chưa đăng ký trước" in page and "Chưa xác định đơn vị" in page
    assert "adopted" not in page  # the action code never reaches the page
    # A unit must be chosen from the list; nonsense is refused with a Vietnamese reason.
    bad = admin.post(f"/console/handover/{record_id}/set_unit", {"unit_id": "999999"})
    assert bad.status_code == 409 and "Vui lòng chọn đơn vị" in bad.text
    assert admin.post(f"/console/handover/{record_id}/set_unit", {"unit_id": world["units"]["TCCB"]}).status_code == 303
    from mdm.models import Device

    with server.session() as s:
        assert s.get(Device, device_id).unit_id == world["units"]["TCCB"]  # the device's unit follows
    assert _records(server, device_id)[0][2] == world["units"]["TCCB"]
    # From here the normal workflow: assign and hand over.
    assert admin.post(f"/console/handover/{record_id}/assign", {"leader_id": world["leader_a"]}).status_code == 303
    assert admin.post(f"/console/handover/{record_id}/hand_over", {"note": "Bàn giao"}).status_code == 303
    assert _records(server, device_id)[0][1] == "handed_over"
    # Re-enrollment of the same iPad does not make a second record.
    from mdm import service

    with server.session() as s:
        reenroll = service.create_reenrollment(s, server.instance.settings, sim.udid, created_by="test")
    again = server.simulator(udid=sim.udid, serial=sim.serial)
    again.enroll(reenroll["url"])
    server.wait_pushes()
    assert [r[0] for r in _records(server, device_id)] == [record_id]
    again.close()
    sim.close()
    admin.close()


def test_registered_ipad_enrolled_with_another_token_keeps_its_record(server):
    world = seed(server)
    admin = client_for(server, "admin")
    sim = server.simulator()
    resp = admin.post("/console/handover/new", {"serial_number": sim.serial, "model": "iPad Air",
                                                "unit_id": world["units"]["HC"]})
    record_id = int(resp.headers["location"].rsplit("/", 1)[1])
    sim.enroll(server.enrollment_url())  # not the console's token: an API/CLI one
    server.wait_pushes()
    records = _records(server, _device_id(server, sim.udid))
    assert records == [(record_id, "enrolled", world["units"]["HC"], sim.serial)]
    # Registered as an iPad Air, the iPad reports iPad13,18 (iPad, 10th generation): said on both pages.
    record_page = admin.get(f"/console/handover/{record_id}").text
    assert 'id="model-mismatch"' in record_page and "iPad (thế hệ thứ 10)" in record_page
    device_page = admin.get(f"/console/devices/{sim.udid}").text
    assert 'id="model-mismatch"' in device_page and "iPad (thế hệ thứ 10)" in device_page
    assert ">Đang hoạt động<" in device_page and ">active<" not in device_page  # the VPN state in words
    admin.post("/console/lang", {"lang": "en", "next": "/console/"})
    assert "iPad (10th generation)" in admin.get(f"/console/devices/{sim.udid}").text
    sim.close()
    admin.close()
