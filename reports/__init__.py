"""Reports (issue #6): monthly security-effectiveness report and the year-end assessment.

Public surface
  register(app, hooks, instance)        mount /api/v1/reports
  cli.report                            click group, mounted as `ipad-mdm report …`
  metrics.compute_month(conn, Month)    -> MonthFigures(kpis, tables)   (pure: data + month → figures)
  yearly.compute_year(conn, year, Thresholds) -> YearFigures (trends, proposals)
  service.build(db, kind, period, lang, formats) -> {format: bytes}
  service.request_report / run_report / ensure_previous_month
  periods.Month                          local (Asia/Ho_Chi_Minh) calendar months as UTC instants

Data flow: loaders.py (one SQLAlchemy select per source → DataFrame) → metrics.py /
yearly.py (figures) → render.py (HTML, PDF, XLSX, CSV zip) → service.py (files, rows).
"""
from __future__ import annotations


def register(app, hooks, instance) -> None:
    from .api import bp

    app.register_blueprint(bp)
