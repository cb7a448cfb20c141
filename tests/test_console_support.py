"""Helpers for the console tests: accounts for every role, a signed-in HTTP client, CSRF handling."""
from __future__ import annotations

import re

PASSWORD = "Mật-khẩu-thử-nghiệm-2026"
ROLES = ("it_admin", "security_officer", "auditor", "leader")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


class ConsoleClient:
    """A browser-like HTTP client: keeps the session cookie and the current CSRF token."""

    def __init__(self, server):
        self.http = server.http(follow_redirects=False)
        self.csrf = None

    def get(self, path, **kw):
        resp = self.http.get(path, **kw)
        if resp.headers.get("content-type", "").startswith("text/html"):
            m = CSRF_RE.search(resp.text)
            if m:
                self.csrf = m.group(1)
        return resp

    def post(self, path, data=None, *, csrf=True, **kw):
        data = dict(data or {})
        if csrf:
            if self.csrf is None:
                self.get("/console/login")
            data.setdefault("csrf_token", self.csrf)
        resp = self.http.post(path, data=data, **kw)
        if resp.headers.get("content-type", "").startswith("text/html"):
            m = CSRF_RE.search(resp.text)
            if m:
                self.csrf = m.group(1)
        return resp

    def login(self, username, password=PASSWORD):
        self.get("/console/login")
        resp = self.post("/console/login", {"username": username, "password": password})
        if resp.status_code == 302:
            # A fresh session has a fresh CSRF token: read it from the next page.
            self.get("/console/login/totp" if "/login/totp" in resp.headers["location"] else "/console/",
                     follow_redirects=True)
        return resp

    def close(self):
        self.http.close()


def seed(server) -> dict:
    """Pilot units, two leaders and one account per role (plus a second leader account)."""
    from console.accounts import create_user
    from console.views import ensure_pilot_units
    from document_gateway import service as gw

    with server.session() as s:
        tccb, hc, ttth = ensure_pilot_units(s)
        leader_a = gw.create_leader(s, "Nguyễn Văn An", tccb, "director", title="Vụ trưởng Vụ Tổ chức cán bộ")
        leader_b = gw.create_leader(s, "Trần Thị Bình", hc, "director", title="Vụ trưởng Vụ Hành chính")
        create_user(s, "admin", PASSWORD, "it_admin", full_name="Lê Minh Quản", unit="TTTH")
        create_user(s, "security", PASSWORD, "security_officer", full_name="Phạm An Ninh", unit="TTTH")
        create_user(s, "auditor", PASSWORD, "auditor", full_name="Hoàng Kiểm Toán")
        create_user(s, "leader", PASSWORD, "leader", full_name=leader_a.full_name, leader_id=leader_a.id)
        create_user(s, "leader-b", PASSWORD, "leader", full_name=leader_b.full_name, leader_id=leader_b.id)
        return {"units": {"TCCB": tccb.id, "HC": hc.id, "TTTH": ttth.id},
                "leader_a": leader_a.id, "leader_b": leader_b.id}


def client_for(server, username) -> ConsoleClient:
    c = ConsoleClient(server)
    resp = c.login(username)
    assert resp.status_code == 302, resp.text
    return c


def enroll_recorded(server, admin: ConsoleClient, unit_id: int, *, model="iPad Pro 11 inch"):
    """Register a device in the console, create its enrollment token and let a simulator enroll with it."""
    from sqlalchemy import select

    from console.models import DeviceRecord

    sim = server.simulator()
    resp = admin.post("/console/handover/new", {"serial_number": sim.serial, "model": model, "unit_id": unit_id})
    assert resp.status_code == 302, resp.text
    record_id = int(resp.headers["location"].rstrip("/").rsplit("/", 1)[1])
    resp = admin.post(f"/console/handover/{record_id}/enroll_token")
    assert resp.status_code == 303, resp.text
    with server.session() as s:
        record = s.scalar(select(DeviceRecord).where(DeviceRecord.id == record_id))
        from console.handover import enrollment_url

        url = enrollment_url(server.instance.fernet(), record)
    sim.enroll(url)
    server.wait_pushes()
    sim.process_commands()
    return sim, record_id
