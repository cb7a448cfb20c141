"""VPN in the console (issue #19): the migration campaigns with their progress per unit and the iPads
that could not move (with the reason in words), the gateways' last applied state, the providers.
IT staff and security officers pause, resume, widen and roll back a campaign here."""
from __future__ import annotations

import base64

from flask import abort, flash, g, redirect, request, url_for
from sqlalchemy import select

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
    return _render()


def _render(error: str | None = None, status: int = 200, form: dict | None = None):
    from vpn import VpnCampaign, VpnProvider, campaigns, gateways, inventory, labels

    with unit_of_work() as s:
        names = {p.key: p.name for p in s.scalars(select(VpnProvider))}
        providers = [{"name": p.name, "kind": label(labels.PROVIDER_KINDS, p.kind),
                      "auth": label(labels.PROVIDER_AUTH, p.auth)} for p in s.scalars(select(VpnProvider).order_by(VpnProvider.name))]
        installed = {_provider_name(names, k): n for k, n in inventory.counts_by_provider(s).items()}
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
        choices = [(k, n) for k, n in (("wireguard", "WireGuard"), ("ikev2", "IKEv2"), *sorted(names.items()))]
        return render_page("vpn.html", campaigns=rows, providers=providers, installed=installed,
                           gateways=gateways.list_all(s), error=error, form=form or {}, choices=choices,
                           kinds=[(k, label(labels.PROVIDER_KINDS, k)) for k in ("openvpn", "vpn_app")],
                           auths=[(k, label(labels.PROVIDER_AUTH, k)) for k in labels.PROVIDER_AUTH]), status


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


def _lines(name: str) -> list[str]:
    return [x.strip() for x in request.form.get(name, "").splitlines() if x.strip()]


def _vendor_config() -> dict:
    """"Khóa = Giá trị" lines; a whole number stays a number."""
    out = {}
    for line in _lines("vendor_config"):
        key, _, value = line.partition("=")
        value = value.strip()
        out[key.strip()] = int(value) if value.isdigit() and len(value) < 18 else value
    return out


@bp.post("/vpn/providers")
@requires("vpn.providers")
def vpn_provider_new():
    from vpn import providers

    form = request.form
    body: dict = {"key": form.get("key", "").strip(), "name": form.get("name", "").strip(), "kind": form.get("kind"),
                  "auth": form.get("auth"), "recognise": _lines("recognise"),
                  "per_app_bundle_ids": _lines("per_app_bundle_ids")}
    if body["kind"] == "openvpn":
        upload = request.files.get("ovpn")
        body["ovpn"] = upload.read(300 * 1024).decode("utf-8", errors="replace") if upload and upload.filename else None
    else:
        body.update(vpn_subtype=form.get("vpn_subtype", "").strip(), vendor_config=_vendor_config(),
                    secret_keys=_lines("secret_keys"))
    p12 = request.files.get("identity_p12")
    if p12 and p12.filename:
        body.update(identity_p12=base64.b64encode(p12.read(64 * 1024)).decode(), identity_password=form.get("identity_password", ""))
    if form.get("verification") in ("openvpn_status", "log_pattern"):
        body["verification"] = {"kind": form["verification"], "path": form.get("verification_path", "").strip(),
                                **({"pattern": form.get("verification_pattern", "")} if form["verification"] == "log_pattern" else {})}
    try:
        with unit_of_work() as s:
            row = providers.define(s, instance(), body, by=f"console:{g.user.username}")
            name = row.name
    except providers.ProviderError as exc:
        kept = {k: v for k, v in form.items() if k not in ("identity_password", "csrf_token")}
        return _render(exc.message(lang()), 409 if exc.status == 409 else 400, kept)
    flash(tr(f"Đã thêm nhà cung cấp VPN “{name}”.", f"VPN provider “{name}” added."))
    return redirect(url_for("console.vpn_page")), 303


@bp.post("/vpn/campaigns")
@requires("vpn.migrate")
def vpn_campaign_new():
    from vpn import campaigns

    form = request.form
    hours = form.get("verify_hours", "24").strip()
    body = {"name": form.get("name", "").strip(), "source": form.get("source"), "target": form.get("target"),
            "verify_hours": int(hours) if hours.isdigit() and len(hours) < 6 else hours}
    try:
        with unit_of_work() as s:
            row = campaigns.create(s, body, by=f"console:{g.user.username}")
            campaigns.advance(s, instance(), row)
    except campaigns.CampaignError as exc:
        return _render(exc.message(lang()), 409 if exc.status == 409 else 400,
                       {k: v for k, v in form.items() if k != "csrf_token"})
    flash(tr("Đã bắt đầu đợt chuyển đổi với các đơn vị thí điểm.", "The campaign has started with the pilot units."))
    return redirect(url_for("console.vpn_page")), 303
