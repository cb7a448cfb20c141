"""Logging helpers: no secret ever reaches a log line.

Access logs (werkzeug's in the embedded server, gunicorn's in production) print request
lines, and the enrollment URL carries its one-time token in the query string. The filter
below replaces such values before any handler formats the record.
"""
from __future__ import annotations

import logging
import re

_SECRET_QUERY = re.compile(r"((?:^|[?&;\s])(?:token|challenge|password|pin)=)[^&\s\"']+", re.IGNORECASE)
ACCESS_LOGGERS = ("werkzeug", "gunicorn.access")


def redact(text: str) -> str:
    # Every secret the pattern knows is "name=value": a text without "=" skips the regex (a dozen atoms per access line).
    return _SECRET_QUERY.sub(r"\1[redacted]", text) if "=" in text else text


class _RedactedAtoms(dict):
    """gunicorn's access-log atoms, redacted as the format reads them: the format uses a handful of
    the dozens of atoms (one per request and response header, a proxy's 2 KB certificate among them),
    and redacting them all cost more than a whole edge decision."""

    def __init__(self, atoms: dict):
        super().__init__()
        self._atoms = atoms

    def __getitem__(self, key):
        value = self._atoms[key]  # gunicorn's SafeAtoms answers "-" for a header that is not there
        return redact(value) if isinstance(value, str) else value

    def __contains__(self, key):
        return key in self._atoms

    def __len__(self):  # logging formats only when there are arguments
        return len(self._atoms)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict) and not isinstance(record.args, _RedactedAtoms):
            record.args = _RedactedAtoms(record.args)
        return True


_FILTER = RedactSecrets()


def install_redaction() -> None:
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
