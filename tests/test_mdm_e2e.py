"""The whole MDM loop through real HTTPS: enroll -> SCEP -> check-in -> push -> command -> inventory."""
from __future__ import annotations


import pytest
from sqlalchemy import select

from mdm.models import Command, Device, IdentityCertificate


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_full_enrollment_and_inventory_loop(server):
    sim = server.simulator(serial="DMPX1234ABCD")
    url = server.enrollment_url(serial_number="DMPX1234ABCD")
    sim.enroll(url)

    # The profile carried the three payloads with URLs built from the base URL.
    assert sim.mdm_payload["ServerURL"] == f"{server.url}/mdm/connect"
    assert sim.mdm_payload["CheckInURL"] == f"{server.url}/mdm/checkin"
    assert sim.mdm_payload["Topic"] == server.instance.push_topic
    assert sim.mdm_payload["SignMessage"] is True
    assert sim.scep_payload["URL"] == f"{server.url}/scep"
    assert sim.identity.issuer == server.instance.ca.certificate.subject

    # First TokenUpdate queued the inventory commands and woke the device through APNs.
    server.wait_pushes()

    push = server.apns.pushes[0]
    assert push.token == sim.push_token.hex()
    assert push.magic == sim.push_magic
    assert push.topic == server.instance.push_topic

    handled = sim.process_commands()
    types = [c["Command"]["RequestType"] for c in handled]
    assert types[:5] == ["DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList", "InstalledApplicationList"]

    with server.session() as s:
        device = s.scalar(select(Device).where(Device.udid == sim.udid))
        assert device.enrollment_state == "enrolled"
        assert device.serial_number == "DMPX1234ABCD"
        assert device.os_version == "18.1"
        assert device.is_supervised is True
        assert device.push_token == sim.push_token.hex()
        assert sim.unlock_token not in device.unlock_token  # encrypted at rest
        assert server.instance.fernet().decrypt(device.unlock_token) == sim.unlock_token
        assert device.security_info["PasscodePresent"] is True
        assert device.profile_list[0]["PayloadIdentifier"] == sim.profile["PayloadIdentifier"]
        assert device.installed_applications[1]["Identifier"] == "com.wireguard.ios"
        # CertificateList data (DER) is stored as base64, and matches the issued identity.
        import base64
        ders = [base64.b64decode(c["Data"]["$data"]) for c in device.certificate_list]
        from cryptography.hazmat.primitives.serialization import Encoding
        assert sim.identity.public_bytes(Encoding.DER) in ders
        cert_row = s.scalar(select(IdentityCertificate).where(IdentityCertificate.device_id == device.id))
        assert int(cert_row.serial, 16) == sim.identity.serial_number
        statuses = {c.request_type: c.status for c in s.scalars(select(Command).where(Command.device_id == device.id))}
        assert set(statuses.values()) == {"acknowledged"}
    sim.close()
