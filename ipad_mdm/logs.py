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
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


_FILTER = RedactSecrets()


def install_redaction() -> None:
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
