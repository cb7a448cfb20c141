"""What a package offers the composition root, in one place (its `MANIFEST`).

    MANIFEST = Manifest(
        name="compliance",
        register="compliance:register",           # register(app, hooks, instance): routes, subscriptions
        models=("compliance.models",),            # modules defining tables (Alembic, create_all)
        jobs=("compliance.jobs",),                # modules declaring @periodic / @background_task
        cli=("compliance.cli:policy",),           # click commands mounted on `ipad-mdm`
    )

References are "module:attribute" strings, imported only when the root needs them, so
declaring a manifest imports nothing heavy.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Manifest:
    name: str
    register: str | None = None
    models: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    cli: tuple[str, ...] = ()


def resolve(ref: str):
    """'package.module:attribute' -> the attribute; 'package.module' -> the module."""
    module, _, attr = ref.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod
