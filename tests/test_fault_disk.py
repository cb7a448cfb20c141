"""Issue #22, item 5: a full disk under the instance's documents and reports, on the production stack.

The fault is real: a tmpfs of a few hundred kilobytes is mounted over <instance>/documents and then
over <instance>/reports while gunicorn and the Celery worker run. An upload that does not fit is
refused with 507 and its reason, nothing is stored (no row, no file, no temporary file left); a
report that cannot be written fails with the reason and claims no file; both work again once the
disk has room."""
from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager

import httpx
from sqlalchemy import func, select

from document_gateway.models import Document
from tests.test_production_stack import BIN, open_stack


@contextmanager
def small_disk(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _files(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_full_disk_refuses_clearly_and_stores_nothing(tmp_path):
    assert os.geteuid() == 0, "mounting the small disk needs root (the CI machine runs as root)"
    with open_stack(tmp_path) as stack:
        run = lambda *a: subprocess.run([str(BIN / "ipad-mdm"), *a], env=stack.env, check=True,  # noqa: E731
                                        capture_output=True, text=True).stdout
        run("unit", "add", "TTTH", "Trung tâm Tin học")
        token = json.loads(run("api-token", "create", "--name", "attt", "--role", "security_officer", "--json"))["token"]
        api = httpx.Client(base_url=stack.url, verify=stack.verify, timeout=60,
                           headers={"Authorization": f"Bearer {token}"})
        documents = stack.instance_dir / "documents"
        with small_disk(documents, "256k"):
            r = api.post("/api/v1/documents", data={"title": "Báo cáo", "unit": "TTTH", "classification": "internal"},
                         files={"file": ("bao-cao.txt", "Số liệu.\n".encode() * 40_000)})  # 400 kB: does not fit
            assert r.status_code == 507, r.text
            assert "full or read-only" in r.json()["error"] and "nothing was stored" in r.json()["error"]
            assert _files(documents) == []  # no partial document, no temporary file
            with stack.session() as s:
                assert s.scalar(select(func.count()).select_from(Document)) == 0
            small = api.post("/api/v1/documents", data={"title": "Công văn", "unit": "TTTH",
                                                        "classification": "internal"},
                             files={"file": ("cong-van.txt", "Công văn số 1.\n".encode() * 100)})
            assert small.status_code == 201, small.text  # room enough for this one
        reports = stack.instance_dir / "reports"
        with small_disk(reports, "16k"):
            r = api.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-11", "formats": ["pdf"]})
            assert r.status_code == 202, r.text
            rid = r.json()["id"]
            for _ in range(600):  # a bound for a worker that never runs the task, not a timing check
                state = api.get(f"/api/v1/reports/{rid}").json()
                if state["status"] in ("done", "failed"):
                    break
                time.sleep(0.2)
            assert state["status"] == "failed" and "disk is full" in state["error"], state
            assert state["files"] == {} and _files(reports) == []
        # Room again: asking again generates it.
        r = api.post("/api/v1/reports", json={"kind": "monthly", "period": "2026-11", "formats": ["pdf"]})
        for _ in range(600):
            state = api.get(f"/api/v1/reports/{rid}").json()
            if state["status"] in ("done", "failed"):
                break
            time.sleep(0.2)
        assert state["status"] == "done" and state["files"]["pdf"]["size"] > 0, state
        api.close()
        assert " 500 " not in (stack.tmp / "web.log").read_text()
