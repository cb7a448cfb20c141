"""The Flask application factory."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from .config import Settings, load_settings
from .hooks import Hooks
from .instance import Instance, open_instance

log = logging.getLogger("ipad_mdm.app")

# Packages that plug into the app: each exposes register(app, hooks, instance).
PACKAGES = ("mdm", "profiles", "vpn", "compliance", "document_gateway", "reports", "console")


def make_dispatcher(inst: Instance):
    """Pushes go through Celery when a broker is configured, else a local thread."""
    from mdm.push import BackgroundPusher, PushSender

    if inst.settings.celery_broker_url:
        from .tasks import CeleryDispatcher

        return CeleryDispatcher()
    return BackgroundPusher(PushSender(inst.database, lambda: make_apns_client(inst)))


def make_apns_client(inst: Instance):
    from mdm.apns import APNsClient, PushCredentials

    s = inst.settings
    creds = PushCredentials.from_files(inst.push_cert_path, inst.push_key_path)
    return APNsClient(s.apns_url, creds, timeout=s.apns_timeout_seconds, max_attempts=s.apns_max_attempts,
                      verify=s.apns_ca_file or True)


def create_app(settings: Settings | None = None, *, inst: Instance | None = None, dispatcher=None) -> Flask:
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
    )
    from .web import BadPaging, bounded_int_converter

    app.url_map.converters["int"] = bounded_int_converter()
    hooks = Hooks()
    app.extensions["ipad_mdm.instance"] = inst
    app.extensions["ipad_mdm.hooks"] = hooks
    app.extensions["ipad_mdm.dispatcher"] = dispatcher or make_dispatcher(inst)

    import importlib

    from . import core_api

    app.register_blueprint(core_api.bp)
    for name in PACKAGES:
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if register is not None:
            register(app, hooks, inst)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        log.warning("%s %s -> %d: %s", request.method, request.path, exc.code, exc.name)
        resp = jsonify({"error": exc.description or exc.name, "status": exc.code})
        resp.status_code = exc.code or 500
        return resp

    @app.errorhandler(BadPaging)
    def bad_paging(exc: BadPaging):
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
