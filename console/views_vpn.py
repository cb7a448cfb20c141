"""VPN in the console (issue #19): the migration campaigns with their progress per unit and the iPads
that could not move (with the reason in words), the gateways' last applied state, the providers.
IT staff and security officers pause, resume, widen and roll back a campaign here."""
from __future__ import annotations

from flask import abort, flash, redirect, url_for
from sqlalchemy import func, select

from ipad_mdm.models import Unit
from ipad_mdm.web import unit_of_work

from .web import bp, can, instance, label, lang, render_page, requires, tr

ACTIONS = ("pause", "resume", "widen", "rollback")


def _provider_name(names: dict, key: str) -> str:
    from vpn import providers

    return names.get(key) or providers.BUILTIN.get(key) or tr("Không rõ", "Unknown")


@bp.get("/vpn")
@requires("vpn.read")
def vpn_page():
    from vpn import VpnCampaign, VpnInstallation, VpnProvider, campaigns, gateways, labels

    with unit_of_work() as s:
        names = {p.key: p.name for p in s.scalars(select(VpnProvider))}
        providers = [{"name": p.name, "kind": label(labels.PROVIDER_KINDS, p.kind),
                      "auth": label(labels.PROVIDER_AUTH, p.auth)} for p in s.scalars(select(VpnProvider).order_by(VpnProvider.name))]
        installed = {_provider_name(names, k): n for k, n in s.execute(
            select(VpnInstallation.provider_key, func.count(func.distinct(VpnInstallation.device_id)))
            .group_by(VpnInstallation.provider_key))}
        units = {u.code: u.name_vi if lang() == "vi" else (u.name_en or u.name_vi) for u in s.scalars(select(Unit))}
        rows = []
        for c in s.scalars(select(VpnCampaign).order_by(VpnCampaign.id.desc()).limit(50)):
            p = campaigns.progress(s, c)
            rows.append({
                "id": c.id, "name": c.name, "source": _provider_name(names, c.source_key),
                "target": _provider_name(names, c.target_key), "stage": label(labels.CAMPAIGN_STAGES, c.stage),
                "state": c.state, "state_label": label(labels.CAMPAIGN_STATES, c.state),
                "steps": [(label(labels.STEPS, k), n) for k, n in sorted(p["steps"].items(), key=lambda kv: list(labels.STEPS).index(kv[0]))],
                "units": [(units.get(code, tr("Chưa gán đơn vị", "No unit")) if code else tr("Chưa gán đơn vị", "No unit"),
                           [(label(labels.STEPS, k), n) for k, n in steps.items()]) for code, steps in sorted(p["units"].items())],
                "failed": [{"serial": f["serial_number"] or f["udid"], "udid": f["udid"],
                            "reason": label(labels.FAILURE_REASONS, labels.reason_code(f["reason"]))} for f in p["failed"]],
                "actions": [a for a in ACTIONS if _allowed(c, a)] if can("vpn.migrate") else []})
        return render_page("vpn.html", campaigns=rows, providers=providers, installed=installed,
                           gateways=gateways.list_all(s))


def _allowed(campaign, action: str) -> bool:
    return {"pause": campaign.state == "running", "resume": campaign.state == "paused",
            "widen": campaign.stage == "pilot" and campaign.state in ("running", "paused"),
            "rollback": campaign.state not in ("rolling_back", "rolled_back")}[action]


@bp.post("/vpn/campaigns/<int:campaign_id>/<action>")
@requires("vpn.migrate")
def vpn_campaign_action(campaign_id, action):
    from vpn import VpnCampaign, campaigns

    if action not in ACTIONS:
        abort(404)
    try:
        with unit_of_work() as s:
            row = s.get(VpnCampaign, campaign_id) if 0 < campaign_id < 2**31 else None
            if row is None:
                abort(404)
            if action in ("pause", "resume"):
                campaigns.set_paused(row, action == "pause")
            elif action == "widen":
                campaigns.widen(row)
                campaigns.advance(s, instance(), row)
            else:
                campaigns.roll_back(s, instance(), row)
    except campaigns.CampaignError:
        flash(tr("Đợt chuyển đổi đã đổi trạng thái trong lúc này; vui lòng xem lại.",
                 "The campaign changed meanwhile; please look again."))
        return redirect(url_for("console.vpn_page")), 303
    flash({"pause": tr("Đã tạm dừng đợt chuyển đổi.", "The campaign is paused."),
           "resume": tr("Đã tiếp tục đợt chuyển đổi.", "The campaign goes on."),
           "widen": tr("Đã mở rộng đợt chuyển đổi ra toàn bộ đơn vị.", "The campaign now covers every unit."),
           "rollback": tr("Đang đưa các iPad về VPN cũ.", "The iPads are going back to the old VPN.")}[action])
    return redirect(url_for("console.vpn_page")), 303
