"""Helpers shared by the thin Flask blueprints: sessions, errors, body limits."""
from __future__ import annotations

import contextlib
import logging

from flask import current_app, jsonify, request
from sqlalchemy.orm import Session

log = logging.getLogger("ipad_mdm.web")


def instance():
    return current_app.extensions["ipad_mdm.instance"]


def hooks():
    return current_app.extensions["ipad_mdm.hooks"]


def dispatcher():
    return current_app.extensions["ipad_mdm.dispatcher"]


def runtime():
    return current_app.extensions["ipad_mdm.runtime"]


@contextlib.contextmanager
def unit_of_work():
    """One transaction for a request. Work for the outside world requested inside it
    (pushes, …) goes out after commit (ipad_mdm.db.after_commit), never after a rollback."""
    s: Session = instance().database.sessionmaker()
    s.info["dispatcher"] = dispatcher()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


def push_after_commit(session: Session, device_id: int) -> None:
    from .dispatch import push_after_commit as push

    push(session, [device_id])


def error(status: int, reason: str, *, log_level=logging.WARNING, **extra):
    """A clear JSON error and one log line naming the request and the reason."""
    log.log(log_level, "%s %s -> %d: %s", request.method, request.path, status, reason)
    body = {"error": reason, "status": status}
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    return resp


def read_body(limit: int | None = None) -> bytes:
    """The request body, refusing more than `limit` bytes without reading it all."""
    limit = limit or instance().settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(limit)
    return data


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


# ------------------------------------------------------------------ paging and ids
# Database integer columns are 32-bit on PostgreSQL; anything larger cannot name a row.
MAX_ID = 2**31 - 1
MAX_OFFSET = 10**7


class BadBody(ValueError):
    """A request body that is not the JSON object the endpoint takes: answered 400."""


def json_object() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadBody("request body must be a JSON object")
    return data


def office_wide_only(what: str):
    """A 403 answer for a unit-scoped token on a change that can reach every unit, else None."""
    from flask import g

    if g.get("api_unit_id") is not None:
        return error(403, f"{what} need an office-wide token (this token is limited to one unit)")
    return None


def office_wide(what: str):
    """Decorator (under @require): office_wide_only for every call of the view."""
    from functools import wraps

    def deco(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            return office_wide_only(what) or view(*args, **kwargs)

        return wrapped

    return deco


class BadPaging(ValueError):
    """Out-of-range or malformed paging parameters: answered 400."""


def _int_arg(args, name: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    raw = raw.strip()
    if not raw.lstrip("-").isdigit() or len(raw) > 12:
        raise BadPaging(f"{name} must be an integer between {lo} and {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadPaging(f"{name} must be an integer between {lo} and {hi}")
    return value


def paging(args=None, *, default_limit: int = 100, max_limit: int = 1000) -> tuple[int, int]:
    """(limit, offset) from ?limit=&offset= (API), or from ?page= with a fixed page size
    of default_limit (console). Raises BadPaging for anything out of range."""
    args = request.args if args is None else args
    if "page" in args and "offset" not in args:
        page = _int_arg(args, "page", 1, 1, MAX_OFFSET // max(default_limit, 1))
        return default_limit, (page - 1) * default_limit
    limit = _int_arg(args, "limit", default_limit, 1, max_limit)
    offset = _int_arg(args, "offset", 0, 0, MAX_OFFSET)
    return limit, offset


def int_arg(name: str, default: int | None = None, *, lo: int = 0, hi: int = MAX_ID, args=None) -> int | None:
    """An optional integer query parameter that must name a row (BadPaging if not)."""
    args = request.args if args is None else args
    if args.get(name) in (None, ""):
        return default
    return _int_arg(args, name, default or 0, lo, hi)


def bounded_int_converter():
    """Flask's `<int:…>` accepts any number of digits; ids past MAX_ID would overflow the
    database driver (a 500). This converter answers 404 for them instead."""
    from werkzeug.routing import IntegerConverter

    class BoundedInt(IntegerConverter):
        def __init__(self, map, *args, **kwargs):
            kwargs.setdefault("max", MAX_ID)
            super().__init__(map, *args, **kwargs)

    return BoundedInt
