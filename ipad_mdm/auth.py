"""Bearer-token authentication for /api/v1, scoped to roles."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets

from flask import g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import utcnow
from .models import ROLES, ApiToken
from .web import error, instance

# What each role may do through the API.
PERMISSIONS = {
    "it_admin": {"devices.read", "devices.write", "commands.send", "commands.destructive", "enroll.create",
                 "profiles.write", "policies.read", "reports.read", "tokens.create", "vpn.migrate", "push.manage"},
    "security_officer": {"devices.read", "commands.send", "commands.destructive", "policies.read", "policies.write",
                         "reports.read", "reports.write", "audit.read", "documents.admin", "tokens.create",
                         "security.read", "security.write", "apps.accept", "vpn.migrate"},
    "auditor": {"devices.read", "policies.read", "reports.read", "audit.read", "security.read"},
    "leader": set(),
}


def create_api_token(session: Session, name: str, role: str, unit_id: int | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 128:
        raise ValueError("name must be a string of 1-128 characters")
    plain = "imdm_" + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, unit_id=unit_id, token_sha256=hashlib.sha256(plain.encode()).hexdigest()))
    session.flush()
    return plain


def lookup_token(session: Session, plain: str) -> ApiToken | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == hashlib.sha256(plain.encode()).hexdigest()))
    if row is None or row.revoked_at is not None:
        return None
    return row


def require(permission: str, *, unit_scoped: bool = False):
    """Decorator: a valid bearer token whose role grants `permission`.

    A token limited to one unit is refused (403) on every route unless the route declares
    `unit_scoped=True`, i.e. it looks its device up through mdm.scope (or filters by
    g.api_unit_id): office-wide resources are never reachable with a unit's token.
    """

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return error(401, "missing bearer token")
            with instance().database.session() as s:
                token = lookup_token(s, header[7:].strip())
                if token is None:
                    return error(401, "invalid or revoked token")
                if permission not in PERMISSIONS.get(token.role, set()):
                    return error(403, f"role {token.role} may not {permission}")
                if token.unit_id is not None and not unit_scoped:
                    return error(403, "this token is limited to one unit; this resource is office-wide")
                now = utcnow()
                # A write per API call would serialise readers on SQLite: once a minute is enough.
                if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
                    token.last_used_at = now
                g.api_principal = f"token:{token.name}"
                g.api_role = token.role
                g.api_unit_id = token.unit_id
            return view(*args, **kwargs)

        return inner

    return wrap
