"""Reports: the monthly security-effectiveness report and the year-end assessment.

Public surface
  MANIFEST, register(app, hooks, instance)  mount /api/v1/reports
  service        build / request_report / run_report / start_background / ensure_previous_month
                 (imported on first use: it brings pandas and matplotlib)
  Report         the stored report rows

Data flow: loaders.py (one select per source → DataFrame) → metrics.py / yearly.py (figures) →
render.py (HTML, PDF, XLSX, CSV zip) → service.py (files, rows).
"""
from __future__ import annotations

import importlib

from ipad_mdm.manifest import Manifest

from .models import Report

__all__ = ["MANIFEST", "register", "service", "Report"]

MANIFEST = Manifest(name="reports", register="reports:register", models=("reports.models",), jobs=("reports.jobs",),
                    cli=("reports.cli:report",))


def __getattr__(name: str):
    if name == "service":  # heavy (pandas, matplotlib): loaded when first asked for
        return importlib.import_module(".service", __name__)
    raise AttributeError(name)


def register(app, hooks, instance) -> None:
    from .api import bp

    app.register_blueprint(bp)
