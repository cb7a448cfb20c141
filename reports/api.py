"""JSON API for reports (/api/v1/reports)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import select

from ipad_mdm.auth import require
from ipad_mdm.web import dispatcher, error, instance, unit_of_work

from . import render, service
from .models import Report

bp = Blueprint("reports_api", __name__, url_prefix="/api/v1")


@bp.post("/reports")
@require("reports.write")
def create_report():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "request body must be a JSON object")
    try:
        kind, period, lang, formats = service.normalise(body.get("kind", "monthly"), body.get("period", ""),
                                                        body.get("lang", "vi"), body.get("formats"))
    except service.ReportInputError as exc:
        return error(400, str(exc))
    with unit_of_work() as s:
        row, must_run = service.request_report(s, kind, period, lang, formats, g.api_principal,
                                               regenerate=bool(body.get("regenerate")))
        report_id = row.id
    if must_run:
        service.start_background(dispatcher(), report_id)
    with unit_of_work() as s:
        data = service.report_dict(s.get(Report, report_id))
    return jsonify(data), 202 if must_run else 200


@bp.get("/reports")
@require("reports.read")
def list_reports():
    stmt = select(Report).order_by(Report.period.desc(), Report.kind, Report.lang, Report.id)
    if request.args.get("kind"):
        stmt = stmt.where(Report.kind == request.args["kind"])
    if request.args.get("period"):
        stmt = stmt.where(Report.period == request.args["period"])
    with unit_of_work() as s:
        return jsonify({"reports": [service.report_dict(r) for r in s.scalars(stmt.limit(500))]})


@bp.get("/reports/<int:report_id>")
@require("reports.read")
def show_report(report_id):
    with unit_of_work() as s:
        row = s.get(Report, report_id)
        if row is None:
            return error(404, "no such report")
        return jsonify(service.report_dict(row))


@bp.get("/reports/<int:report_id>/<fmt>")
@require("reports.read")
def download_report(report_id, fmt):
    with unit_of_work() as s:
        row = s.get(Report, report_id)
        if row is None:
            return error(404, "no such report")
        if row.status != "done":
            return error(409, f"report is {row.status}", report=service.report_dict(row))
        meta = (row.files or {}).get(fmt)
        if meta is None:
            return error(404, f"format {fmt} was not generated for this report")
        name = service.file_name(row.kind, row.period, row.lang, fmt)
    base = Path(instance().settings.instance_dir).resolve()
    path = (base / meta["path"]).resolve()
    if base not in path.parents:  # the row is data; never follow it outside the instance
        return error(500, "report path outside the instance folder")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return error(410, "report file is missing; regenerate it")
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        return error(500, "report file does not match its recorded SHA-256")
    resp = Response(data, mimetype=render.MIME[fmt])
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    resp.headers["X-Content-SHA256"] = meta["sha256"]
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
