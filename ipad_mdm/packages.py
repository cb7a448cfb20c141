"""Composition root: the one place that knows every package.

The core (config, db, crypto, mobileconfig, hooks, web helpers, jobs registries) never names
a package; mdm is the protocol layer; the feature packages use mdm and the core. This module
loops over their manifests for the app factory (ipad_mdm.app), the CLI (ipad_mdm.cli), the
Celery worker and beat (ipad_mdm.tasks), the embedded scheduler and Alembic.
"""
from __future__ import annotations

import importlib

from .manifest import Manifest, resolve

# Order matters only for route registration and hook subscription order.
PACKAGES = ("mdm", "profiles", "declarative", "apps", "vpn", "compliance", "document_gateway", "usb_tokens", "reports",
            "console", "ade", "webhooks")

CORE = Manifest(name="ipad_mdm", register="ipad_mdm.core_api:register",
                models=("ipad_mdm.models", "ipad_mdm.security_events", "ipad_mdm.outbox"))


def manifests() -> list[Manifest]:
    return [CORE] + [importlib.import_module(name).MANIFEST for name in PACKAGES]


def import_all_models() -> None:
    """Every package's tables on Base.metadata (Alembic, schema checks)."""
    for m in manifests():
        for module in m.models:
            importlib.import_module(module)


def load_jobs() -> None:
    """Import every job/task module so ipad_mdm.jobs' registries are complete."""
    for m in manifests():
        for module in m.jobs:
            importlib.import_module(module)


def register_all(app, hooks, instance) -> None:
    for m in manifests():
        if m.register:
            resolve(m.register)(app, hooks, instance)


def cli_commands() -> list:
    return [resolve(ref) for m in manifests() for ref in m.cli]


# Command name -> "module:attribute" of every package's CLI group (the manifests' cli entries,
# named): `ipad-mdm` imports a package's CLI only when that command runs. Importing every
# package for every call was two thirds of a CLI call (1.0 of 1.5 s). test_architecture checks
# this table against the manifests.
CLI_COMMANDS = {
    "enroll-token": "mdm.cli:enroll_token", "device": "mdm.cli:device", "command": "mdm.cli:command",
    "vpn": "vpn.cli:vpn", "gateway": "document_gateway.cli:gateway", "usb-token": "usb_tokens.cli:usb_token",
    "report": "reports.cli:report", "user": "console.cli:user", "app": "apps.cli:app",
    "declaration": "declarative.cli:declaration", "ade": "ade.cli:ade", "webhook": "webhooks.cli:webhook",
    "push-cert": "mdm.pushcert.cli:push_cert",
}
