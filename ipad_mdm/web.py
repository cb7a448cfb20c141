"""Helpers shared by the thin Flask blueprints: sessions, errors, body limits."""
from __future__ import annotations

import contextlib
import logging

from flask import current_app, g, jsonify, request
from sqlalchemy.orm import Session

log = logging.getLogger("ipad_mdm.web")


def instance():
    return current_app.extensions["ipad_mdm.instance"]


def hooks():
    return current_app.extensions["ipad_mdm.hooks"]


def dispatcher():
    return current_app.extensions["ipad_mdm.dispatcher"]


@contextlib.contextmanager
def unit_of_work():
    """One transaction for a request; pushes requested inside it go out after commit."""
    s: Session = instance().database.sessionmaker()
    g.push_device_ids = set()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        g.push_device_ids = set()
        raise
    finally:
        s.close()
    if g.push_device_ids:
        dispatcher().request_push(sorted(g.push_device_ids))


def push_after_commit(device_id: int) -> None:
    g.setdefault("push_device_ids", set()).add(device_id)


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
