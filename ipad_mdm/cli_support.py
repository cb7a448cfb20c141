"""What every package's CLI group needs: the instance the `ipad-mdm` command names,
JSON or plain output, and a clean failure (a message on stderr and an exit code, no traceback)."""
from __future__ import annotations

import json
import sys

import click


def instance_dir_of(ctx, override: str | None = None) -> str | None:
    if override:
        return override
    root = ctx.find_root().obj
    return root.get("instance") if isinstance(root, dict) else None


def open_instance_for(ctx, override: str | None = None, **settings_overrides):
    from .config import load_settings
    from .instance import open_instance

    return open_instance(load_settings(instance_dir_of(ctx, override), **settings_overrides))


def emit(data, as_json: bool = True) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    elif isinstance(data, dict):
        for k, v in data.items():
            click.echo(f"{k}: {v}")
    else:
        click.echo(data)


def fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
