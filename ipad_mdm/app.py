"""The Flask application factory (composition root: wires every package through its manifest)."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from .config import Settings, load_settings
from .crypto.pkcs11_keys import Pkcs11Error
from .hooks import Hooks
from .instance import Instance, open_instance

log = logging.getLogger("ipad_mdm.app")

def make_dispatcher(inst: Instance, runtime):
    """Background work goes through Celery when a broker is configured, else local threads."""
    from .dispatch import BackgroundDispatcher, CeleryDispatcher

    if inst.settings.celery_broker_url:
        from .celery_app import celery_app

        return CeleryDispatcher(celery_app())
    return BackgroundDispatcher(runtime)


def create_app(settings: Settings | None = None, *, inst: Instance | None = None, dispatcher=None,
               serving: bool = True) -> Flask:
    """serving=False: a CLI command's runtime (hooks and dispatcher only); start-up work of a
    server (regenerating the VPN gateway file) is not done, and not logged, for a read-only command."""
    from .logs import install_redaction

    install_redaction()
    settings = settings or (inst.settings if inst else load_settings())
    inst = inst or open_instance(settings)
    app = Flask("ipad_mdm")
    app.config.update(
        SECRET_KEY=inst.app_secret,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        JSON_SORT_KEYS=False,
        IPAD_MDM_SERVING=serving,
    )
    from .web import BadBody, BadPaging, bounded_int_converter

    app.url_map.converters["int"] = bounded_int_converter()
    from . import packages
    from .runtime import Runtime

    hooks = Hooks()
    runtime = Runtime(inst, hooks, None)
    runtime.dispatcher = dispatcher or make_dispatcher(inst, lambda: runtime)
    if serving and hasattr(runtime.dispatcher, "warm"):
        runtime.dispatcher.warm()
    app.extensions["ipad_mdm.instance"] = inst
    app.extensions["ipad_mdm.hooks"] = hooks
    app.extensions["ipad_mdm.dispatcher"] = runtime.dispatcher
    app.extensions["ipad_mdm.runtime"] = runtime
    packages.load_jobs()
    packages.register_all(app, hooks, inst)
    from . import token_alerts

    token_alerts.install(inst)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        log.warning("%s %s -> %d: %s", request.method, request.path, exc.code, exc.name)
        resp = jsonify({"error": exc.description or exc.name, "status": exc.code})
        resp.status_code = exc.code or 500
        return resp

    @app.errorhandler(BadBody)
    @app.errorhandler(BadPaging)
    def bad_paging(exc: ValueError):
        log.warning("%s %s -> 400: %s", request.method, request.path, exc)
        resp = jsonify({"error": str(exc), "status": 400})
        resp.status_code = 400
        return resp

    @app.errorhandler(DBAPIError)
    def database_unavailable(exc: DBAPIError):
        log.error("database error on %s %s: %s", request.method, request.path, type(exc.orig).__name__)
        resp = jsonify({"error": "database temporarily unavailable; retry later", "status": 503})
        resp.status_code = 503
        resp.headers["Retry-After"] = "30"
        return resp

    @app.errorhandler(Pkcs11Error)
    def token_unavailable(exc: Pkcs11Error):
        # Enrollment, SCEP and profile installs need the CA or signing token; nothing was stored
        # (the request's transaction rolled back). The alert itself is raised by token_alerts.
        log.error("%s %s -> 503: %s", request.method, request.path, exc)
        resp = jsonify({"error": exc.message("en"), "error_vi": exc.message("vi"), "reason": exc.reason,
                        "token": exc.token, "purpose": exc.purpose, "status": 503})
        resp.status_code = 503
        resp.headers["Retry-After"] = "60"
        return resp

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        resp = jsonify({"error": "internal error", "status": 500})
        resp.status_code = 500
        return resp

    @app.get("/healthz")
    def healthz():
        from sqlalchemy import text

        with inst.database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return jsonify({"status": "ok"})

    return app
