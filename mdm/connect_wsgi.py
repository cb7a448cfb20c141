"""A signed Idle on /mdm/connect with nothing waiting, answered in front of Flask.

Most of a fleet's traffic is such Idles. Flask's request context, routing and response objects
were a large part of what one cost once the database work was one round trip, so this WSGI layer
answers them itself with the same functions the view uses (checkin.certificate_from_signature,
views.answered_idle). Everything else — no Mdm-Signature (a proxy's certificate header), no or a
too large Content-Length, a bad signature, a command waiting, an unknown identity, a database
error — goes on to Flask with the body put back, and the view decides and answers the rest. What was
established here is handed on in the environ (VERIFIED, IDLE_TRIED), not done twice: verifying the
signature is a third of what an acknowledgement's request costs before its database work."""
from __future__ import annotations

import io
import logging

from sqlalchemy.exc import DBAPIError

from . import checkin
from .views import answered_idle

log = logging.getLogger(__name__)
PATH = "/mdm/connect"


class IdleConnectWSGI:
    def __init__(self, app, inst, wake=None):
        self.app, self.inst, self.wake = app, inst, wake

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == PATH and environ.get("REQUEST_METHOD") == "PUT" \
                and environ.get("HTTP_MDM_SIGNATURE"):
            body = self._body(environ)
            if body is not None:
                environ["wsgi.input"] = io.BytesIO(body)  # for Flask, if it has to decide after all
                if self._answered(environ, body):
                    start_response("200 OK", [("Content-Length", "0")])
                    return [b""]
        return self.app(environ, start_response)

    def _body(self, environ) -> bytes | None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= self.inst.settings.max_body_bytes:
            return None  # Flask refuses a body too large (413) without reading it
        return environ["wsgi.input"].read(length)  # a short body fails its signature: Flask answers

    def _answered(self, environ, body: bytes) -> bool:
        signature = environ["HTTP_MDM_SIGNATURE"]
        try:
            cert = checkin.certificate_from_signature(body, signature)
        except checkin.DeviceAuthError:
            return False  # the view meets the same condition and answers it (401)
        environ[checkin.VERIFIED_SIGNER] = (body, signature, cert)
        try:
            answered = answered_idle(self.inst, body, cert, self.wake)
        except DBAPIError:
            return False  # the view meets the same condition and answers it (503)
        environ[checkin.IDLE_TRIED] = True
        return answered
