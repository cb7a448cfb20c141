"""Many connections for one device at once: every command is handed out exactly once."""
from __future__ import annotations

import plistlib
import ssl
import threading
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from mdm import service
from mdm.models import Command


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_each_command_delivered_once_under_concurrent_connects(enrolled, server):
    with server.session() as s:
        queued = [service.send_command(s, enrolled.udid, "DeviceInformation", requested_by="test").uuid for _ in range(40)]
    delivered: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    verify = ssl.create_default_context(cafile=server.ca_path)

    def put(client, message):
        body = plistlib.dumps(message)
        return client.put(enrolled.mdm_payload["ServerURL"], content=body, headers={"Mdm-Signature": enrolled.sign(body)})

    def worker():
        with httpx.Client(verify=verify, timeout=60) as client:
            r = put(client, {"UDID": enrolled.udid, "Status": "Idle"})
            while True:
                if r.status_code != 200:
                    with lock:
                        errors.append(f"{r.status_code} {r.text}")
                    return
                if not r.content:
                    return
                cmd = plistlib.loads(r.content)
                with lock:
                    delivered.append(cmd["CommandUUID"])
                status, payload = enrolled.answer(cmd["Command"])
                r = put(client, {"UDID": enrolled.udid, "Status": status, "CommandUUID": cmd["CommandUUID"], **payload})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = Counter(delivered)
    assert [u for u, n in counts.items() if n > 1] == []
    assert set(queued) <= set(counts)
    with server.session() as s:
        rows = list(s.scalars(select(Command).where(Command.uuid.in_(queued))))
        assert {r.status for r in rows} == {"acknowledged"}
        assert {r.attempts for r in rows} == {1}
