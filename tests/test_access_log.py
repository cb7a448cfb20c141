"""gunicorn's access lines through the project's logger (deploy/gunicorn.conf.py's logger_class): the
same line gunicorn's own logger writes, secrets redacted, atoms of named headers included."""
from __future__ import annotations

import datetime as dt
import io
import logging
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from ipad_mdm.gunicorn_logging import AUDITED, AccessLogger
from ipad_mdm.logs import install_redaction

CERT = "-----BEGIN%20CERTIFICATE-----%0A" + "A" * 2400  # a proxy's escaped certificate header


def _line(logger_class, fmt: str | None = None, **marks) -> str:
    cfg = Config()
    cfg.set("accesslog", "-")
    if fmt:
        cfg.set("access_log_format", fmt)
    logger = logger_class(cfg)
    install_redaction()
    out = io.StringIO()
    for handler in logger.access_log.handlers:
        handler.setStream(out)
    req = SimpleNamespace(headers=[("HOST", "mdm.vpcp.gov.vn"), ("USER-AGENT", "MDM/1.0"), ("X-CLIENT-CERT", CERT),
                                   ("X-REQUEST-ID", "r-42")])
    resp = SimpleNamespace(status="200 OK", sent=7780, headers=[("Content-Type", "application/x-apple-aspen-config"),
                                                                ("X-MDM-Verdict", "compliant")])
    environ = {"REMOTE_ADDR": "10.0.0.7", "REQUEST_METHOD": "GET", "RAW_URI": "/mdm/enroll?token=s3cr3t-t0ken",
               "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/mdm/enroll", "QUERY_STRING": "token=s3cr3t-t0ken",
               "HTTP_USER_AGENT": "MDM/1.0", "HTTP_X_CLIENT_CERT": CERT, "wsgi.url_scheme": "https", **marks}
    logger.now = lambda: "[04/Dec/2026:10:00:00 +0700]"
    logger.access(resp, req, environ, dt.timedelta(microseconds=1234))
    for handler in logger.access_log.handlers:
        handler.flush()
    return out.getvalue()


@pytest.mark.parametrize("fmt", [None, '%(h)s "%(r)s" %(s)s %({x-request-id}i)s %({x-mdm-verdict}o)s %({wsgi.url_scheme}e)s '
                                       '%({x-missing}i)s %(D)s'])
def test_access_lines_match_gunicorns_and_hide_secrets(fmt):
    ours, theirs = _line(AccessLogger, fmt), _line(Logger, fmt)
    assert ours == theirs and ours.strip()
    assert "s3cr3t-t0ken" not in ours and "token=[redacted]" in ours
    if fmt:
        assert "r-42 compliant https - 1234" in ours


def test_redaction_stays_on_every_access_logger():
    logging.getLogger("gunicorn.access").filters.clear()
    install_redaction()
    assert logging.getLogger("gunicorn.access").filters


def test_an_audited_request_gets_no_access_line_unless_asked(monkeypatch):
    """A compliant iPad's edge decision answered by the fast path is marked audited: its hash-chained
    audit row is its record. IPAD_MDM_ACCESS_LOG_AUDITED=1 writes the line anyway; other requests always."""
    monkeypatch.delenv("IPAD_MDM_ACCESS_LOG_AUDITED", raising=False)
    assert _line(AccessLogger, **{AUDITED: True}) == ""
    assert _line(AccessLogger).strip()
    monkeypatch.setenv("IPAD_MDM_ACCESS_LOG_AUDITED", "1")
    assert _line(AccessLogger, **{AUDITED: True}) == _line(Logger)
