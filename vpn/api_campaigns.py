"""JSON API of VPN providers and migration campaigns (issue #19).

  GET  /api/v1/vpn/providers                         built-in and defined providers (no secret, ever)
  POST /api/v1/vpn/providers                         define one (security officers)
  GET  /api/v1/vpn/providers/<key>
  GET  /api/v1/vpn/installed                         devices per installed provider
  GET  /api/v1/vpn/gateways                          each gateway's last applied state (its agent's reports)
  GET  /api/v1/devices/<udid>/vpn/installed          what the iPad reported, and its campaigns
  POST /api/v1/devices/<udid>/vpn/install            {"provider": key}: its signed profile, queued
  POST /api/v1/vpn/campaigns                         {name, source, target, verify_hours}
  GET  /api/v1/vpn/campaigns[/<id>]                  progress per step and unit, failed devices with reasons
  POST /api/v1/vpn/campaigns/<id>/(pause|resume|widen|rollback|advance)

Providers and campaigns reach every unit: office-wide tokens only.
"""
from __future__ import annotations

from flask import Blueprint, g, jsonify

from ipad_mdm.auth import require
from ipad_mdm.web import MAX_ID, error, instance, json_object, office_wide_only, unit_of_work
from mdm import device_for_request

from . import campaigns, inventory, providers
from .models import VpnCampaign

bp = Blueprint("vpn_campaigns_api", __name__, url_prefix="/api/v1")


@bp.get("/vpn/providers")
@require("devices.read")
def list_providers():
    with unit_of_work() as s:
        return jsonify({"providers": providers.list_all(s)})


@bp.post("/vpn/providers")
@require("security.write")
def define_provider():
    body = json_object()
    try:
        with unit_of_work() as s:
            row = providers.define(s, instance(), body, by=g.api_principal)
            return jsonify(providers.describe(row)), 201
    except providers.ProviderError as exc:
        return error(exc.status, str(exc), code=exc.code)


@bp.get("/vpn/providers/<key>")
@require("devices.read")
def show_provider(key):
    with unit_of_work() as s:
        if key in providers.BUILTIN:
            return jsonify({"key": key, "name": providers.BUILTIN[key], "kind": key, "builtin": True})
        row = providers.get(s, key[:64])
        if row is None:
            return error(404, f"unknown VPN provider {key[:64]}")
        return jsonify(providers.describe(row))


@bp.get("/vpn/gateways")
@require("devices.read")
def list_gateways():
    from . import gateways

    with unit_of_work() as s:
        return jsonify({"gateways": gateways.list_all(s)})


@bp.get("/vpn/installed")
@require("devices.read")
def installed_counts():
    with unit_of_work() as s:
        return jsonify({"devices_by_provider": inventory.counts_by_provider(s)})


@bp.get("/devices/<udid>/vpn/installed")
@require("devices.read", unit_scoped=True)
def device_installed(udid):
    with unit_of_work() as s:
        device = device_for_request(s, udid)
        if device is None:
            return error(404, f"unknown device {udid}")
        return jsonify({"udid": device.udid, "installed": inventory.installed(s, device.id),
                        "campaigns": campaigns.device_campaign_rows(s, device.id)})


@bp.post("/devices/<udid>/vpn/install")
@require("vpn.migrate", unit_scoped=True)
def device_install(udid):
    body = json_object()
    key = body.get("provider")
    if not isinstance(key, str):
        return error(400, "provider must be the key of a VPN provider")
    try:
        with unit_of_work() as s:
            device = device_for_request(s, udid)
            if device is None:
                return error(404, f"unknown device {udid}")
            uuid = campaigns.install_provider(s, instance(), device, key, by=g.api_principal)
            return jsonify({"udid": device.udid, "provider": key, "command_uuid": uuid}), 202
    except campaigns.CampaignError as exc:
        return error(exc.status, str(exc), code=exc.code)
    except Exception as exc:  # VpnError of the built-in providers (a retired device, a full pool)
        from .service import VpnError

        if isinstance(exc, VpnError):
            return error(exc.status, str(exc))
        raise


@bp.post("/vpn/campaigns")
@require("vpn.migrate")
def create_campaign():
    body = json_object()
    try:
        with unit_of_work() as s:
            row = campaigns.create(s, body, by=g.api_principal)
            campaigns.advance(s, instance(), row)
            return jsonify(campaigns.progress(s, row)), 201
    except campaigns.CampaignError as exc:
        return error(exc.status, str(exc), code=exc.code)


@bp.get("/vpn/campaigns")
@require("devices.read")
def list_campaigns():
    from sqlalchemy import select

    with unit_of_work() as s:
        rows = s.scalars(select(VpnCampaign).order_by(VpnCampaign.id.desc()).limit(200))
        return jsonify({"campaigns": [campaigns.progress(s, c, failed_limit=0) for c in rows]})


def _campaign(s, campaign_id: int):
    return s.get(VpnCampaign, campaign_id) if 0 < campaign_id <= MAX_ID else None


@bp.get("/vpn/campaigns/<int:campaign_id>")
@require("devices.read")
def show_campaign(campaign_id):
    with unit_of_work() as s:
        row = _campaign(s, campaign_id)
        if row is None:
            return error(404, f"unknown campaign {campaign_id}")
        return jsonify(campaigns.progress(s, row))


@bp.post("/vpn/campaigns/<int:campaign_id>/<action>")
@require("vpn.migrate")
def act(campaign_id, action):
    if action not in ("pause", "resume", "widen", "rollback", "advance"):
        return error(404, f"unknown campaign action {action[:40]}")
    refused = office_wide_only("campaign actions")
    if refused is not None:
        return refused
    try:
        with unit_of_work() as s:
            row = _campaign(s, campaign_id)
            if row is None:
                return error(404, f"unknown campaign {campaign_id}")
            extra = {}
            if action in ("pause", "resume"):
                campaigns.set_paused(row, action == "pause")
            elif action == "widen":
                campaigns.widen(row)
                extra = campaigns.advance(s, instance(), row)
            elif action == "rollback":
                extra = campaigns.roll_back(s, instance(), row)
            else:
                extra = campaigns.advance(s, instance(), row)
            return jsonify({**campaigns.progress(s, row), "pass": extra})
    except campaigns.CampaignError as exc:
        return error(exc.status, str(exc), code=exc.code)
