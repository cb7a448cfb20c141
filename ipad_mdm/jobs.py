"""Periodic jobs and background tasks, declared once by each package and run either by
Celery (production: beat + workers) or in-process (the embedded default `ipad-mdm serve`).

    @periodic("compliance.evaluate_all", 300)
    def evaluate_all(rt): ...                 # rt: ipad_mdm.runtime.Runtime

    @background_task("mdm.send_pushes")
    def send_pushes(rt, device_ids): ...      # run through rt.dispatcher.submit(name, *args)

The core keeps the registries; it never names a package. The composition root imports each
package's job and task modules (its manifest) before reading them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval_seconds: int
    run: Callable  # run(runtime) -> JSON-able result or None


@dataclass(frozen=True)
class BackgroundTask:
    name: str
    run: Callable  # run(runtime, *args) -> JSON-able result or None


_JOBS: dict[str, PeriodicJob] = {}
_TASKS: dict[str, BackgroundTask] = {}


def periodic(name: str, interval_seconds: int):
    def deco(fn):
        _JOBS[name] = PeriodicJob(name, interval_seconds, fn)
        return fn

    return deco


def background_task(name: str):
    def deco(fn):
        _TASKS[name] = BackgroundTask(name, fn)
        return fn

    return deco


def registered_jobs() -> list[PeriodicJob]:
    """Every periodic job, with IPAD_MDM_JOB_INTERVALS ("name=seconds,…") applied: operators
    (and tests) may run a job more or less often than its default."""
    overrides = {}
    for item in os.environ.get("IPAD_MDM_JOB_INTERVALS", "").split(","):
        name, _, seconds = item.partition("=")
        if name.strip() and seconds.strip().isdigit() and int(seconds) > 0:
            overrides[name.strip()] = int(seconds)
    return sorted((replace(j, interval_seconds=overrides.get(j.name, j.interval_seconds)) for j in _JOBS.values()),
                  key=lambda j: j.name)


def registered_tasks() -> dict[str, BackgroundTask]:
    return dict(_TASKS)


def job(name: str) -> PeriodicJob | None:
    return _JOBS.get(name)


def task(name: str) -> BackgroundTask:
    found = _TASKS.get(name)
    if found is None:
        raise LookupError(f"no background task named {name}")
    return found
