"""gunicorn's logger, building only the access-log atoms its format names.

gunicorn builds, for every request, one atom per request header, response header and environ
variable (a reverse proxy's 2 KB certificate header among them) and then copies and escapes all of
them, although the format uses a dozen: on /edge/decide that was a fifth of the request's CPU. Here
the same atoms are made from what the format asks for; the line is the same. Used by
deploy/gunicorn.conf.py (`logger_class`).

A request the app marks AUDITED (a compliant iPad's /edge/decide answered by the fast path) gets no
access line: its decision is a row of the gateway's hash-chained audit log, with more than the line
would say (device, leader, verdict, classification, method, URI, client address), and the proxy in
front logs the request as well. At thousands of decisions a second the line was a sixth of each one's
CPU. IPAD_MDM_ACCESS_LOG_AUDITED=1 writes them anyway."""
from __future__ import annotations

import os
import re
from types import SimpleNamespace

from gunicorn.glogging import Logger

_NAMED = re.compile(r"%\(([^)]+)\)")
# The environ mark of a request whose record is its audit row (see above).
AUDITED = "ipad_mdm.audited"
# What gunicorn's own atoms read from the environ (the user comes from HTTP_AUTHORIZATION).
_BASE_ENVIRON = ("REMOTE_ADDR", "REQUEST_METHOD", "RAW_URI", "SERVER_PROTOCOL", "PATH_INFO", "QUERY_STRING",
                 "HTTP_REFERER", "HTTP_USER_AGENT", "HTTP_AUTHORIZATION")


class AccessLogger(Logger):
    _format = None
    _wanted: tuple[frozenset, frozenset, frozenset] = (frozenset(), frozenset(), frozenset())

    def __init__(self, cfg):
        super().__init__(cfg)
        self._log_audited = os.environ.get("IPAD_MDM_ACCESS_LOG_AUDITED", "") in ("1", "true", "yes")

    def access(self, resp, req, environ, request_time):
        if environ.get(AUDITED) and not self._log_audited:
            return
        super().access(resp, req, environ, request_time)

    def _wanted_atoms(self):
        fmt = self.cfg.access_log_format
        if fmt != self._format:
            names = [n.lower() for n in _NAMED.findall(fmt)]
            self._wanted = tuple(frozenset(n[1:-2] for n in names if n.startswith("{") and n.endswith("}" + kind))
                                 for kind in ("i", "o", "e"))
            self._format = fmt
        return self._wanted

    def atoms(self, resp, req, environ, request_time):
        request_headers, response_headers, environ_names = self._wanted_atoms()
        env = {k: environ[k] for k in _BASE_ENVIRON if k in environ}
        if environ_names:
            env.update({k: v for k, v in environ.items() if k.lower() in environ_names})
        req_view = SimpleNamespace(headers=[(k, v) for k, v in getattr(req, "headers", ())
                                            if k.lower() in request_headers])
        resp_view = SimpleNamespace(status=resp.status, sent=getattr(resp, "sent", None),
                                    headers=[(k, v) for k, v in resp.headers if k.lower() in response_headers])
        return super().atoms(resp_view, req_view, env, request_time)
