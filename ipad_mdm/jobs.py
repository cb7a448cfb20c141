"""Periodic jobs, declared once and run either by Celery beat (production) or
by the embedded scheduler thread (`ipad-mdm serve`, no external servers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval_seconds: int
    run: Callable  # run(instance, dispatcher) -> None


_JOBS: dict[str, PeriodicJob] = {}


def periodic(name: str, interval_seconds: int):
    def deco(fn):
        _JOBS[name] = PeriodicJob(name, interval_seconds, fn)
        return fn

    return deco


def all_jobs() -> list[PeriodicJob]:
    load_job_modules()
    return sorted(_JOBS.values(), key=lambda j: j.name)


def load_job_modules() -> None:
    import importlib

    for name in ("mdm.jobs", "compliance.jobs", "reports.jobs", "profiles.jobs", "vpn.jobs", "document_gateway.jobs"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
