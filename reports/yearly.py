"""Year-end assessment: monthly trends and rule-based proposals for next year's IT-service plan.

Thresholds: reports/thresholds.py (environment variables IPAD_MDM_REPORT_*).
Every proposal carries the figure that triggered it and the threshold it crossed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection

from . import fmt
from .i18n import GATEWAY_REASONS, RULES, pick
from .metrics import MetricOptions, _mean, nearest_rank
from .month import MonthFigures, compute_month, has_data
from .periods import Month, months_of_year
from .plan import plan_figures, plan_proposals, proposal
from .thresholds import Thresholds


@dataclass
class YearFigures:
    year: int
    months: list[MonthFigures]
    kpis: dict
    tables: dict[str, pd.DataFrame]
    recommendations: list[dict]


TREND_KPIS = ("fleet_enrolled", "compliance_rate", "never_compliant", "remediation_mean_hours", "remediation_p90_hours",
              "gateway_denied", "gateway_deny_rate", "cert_renewals", "cert_late_renewals", "vpn_cuts",
              "patch_latency_mean_days")


def compute_year(conn: Connection, year: int, thresholds: Thresholds | None = None, progress=None,
                 as_of=None) -> YearFigures:
    """The year's figures over the months that have happened by `as_of` (None: the year is over);
    months still to come are rows without data, never counted."""
    th = thresholds or Thresholds()
    opts = MetricOptions(late_renewal_days=th.late_renewal_days)
    months, future = [], []
    for m in months_of_year(year):
        if as_of is not None and as_of <= m.start:
            future.append(m)
            continue
        months.append(compute_month(conn, m, opts, as_of))
        if progress:
            progress(f"{m}")
    def trend(f):  # a month before the first enrollment has no data at all: "–", never 0
        return {"month": str(f.month), **{k: f.kpis.get(k) if has_data(f.kpis) else None for k in TREND_KPIS}}

    trends = pd.DataFrame([trend(f) for f in months]
                          + [{"month": str(m), **{k: None for k in TREND_KPIS}} for m in future])

    dd = sum(f.kpis["device_days"] for f in months)
    compliant = sum(float(f.tables["compliance_daily"]["compliant"].sum()) for f in months)
    rules = pd.concat([f.tables["rules"][["rule", "device_days"]] for f in months], ignore_index=True)
    rules = rules.groupby("rule", as_index=False)["device_days"].sum() if len(rules) else pd.DataFrame(columns=["rule", "device_days"])
    rules["share"] = rules["device_days"] / dd if dd else np.nan
    rules = rules.sort_values(["device_days", "rule"], ascending=[False, True], kind="mergesort").reset_index(drop=True)

    eps = pd.concat([f.tables["remediation_episodes"] for f in months], ignore_index=True)
    names = pd.concat([f.tables["compliance_units"][["unit_code", "unit_name_vi", "unit_name_en"]] for f in months]
                      + [pd.DataFrame(columns=["unit_code", "unit_name_vi", "unit_name_en"])], ignore_index=True)
    names = names.drop_duplicates("unit_code").set_index("unit_code")
    unit_rows = [{"unit_code": code, "unit_name_vi": names["unit_name_vi"].get(code, code),
                  "unit_name_en": names["unit_name_en"].get(code, "") or "", "episodes": len(g), "mean_hours": _mean(g["hours"]),
                  "p90_hours": nearest_rank(g["hours"], 0.9)}
                 for code, g in eps.groupby("unit_code", sort=True)]
    units = pd.DataFrame(unit_rows, columns=["unit_code", "unit_name_vi", "unit_name_en", "episodes", "mean_hours", "p90_hours"])

    deny = pd.concat([f.tables["gateway_reasons"] for f in months], ignore_index=True)
    deny = deny[deny["decision"] == "deny"] if len(deny) else deny
    deny = (deny.groupby("reason_code", as_index=False)["count"].sum() if len(deny)
            else pd.DataFrame(columns=["reason_code", "count"]))
    total_deny = int(deny["count"].sum()) if len(deny) else 0
    deny["share"] = deny["count"] / total_deny if total_deny else np.nan
    deny = deny.sort_values(["count", "reason_code"], ascending=[False, True], kind="mergesort").reset_index(drop=True)

    renewals = sum(f.kpis["cert_renewals"] for f in months)
    late = sum(f.kpis["cert_late_renewals"] for f in months)
    cuts = sum(f.kpis["vpn_cuts"] for f in months)
    fleet = max([f.kpis["fleet_enrolled"] for f in months] + [0])
    provisional = bool(future) or any(f.kpis.get("provisional") for f in months)
    lat = [v for f in months for v in f.tables["patch_latency"]["mean_days"].dropna().tolist()]
    all_eps = eps["hours"].tolist() if len(eps) else []
    kpis = {"compliance_rate": compliant / dd if dd else None, "device_days": dd, "remediation_episodes": len(all_eps),
            "remediation_mean_hours": _mean(all_eps), "remediation_p90_hours": nearest_rank(all_eps, 0.9),
            "gateway_denied": total_deny, "cert_renewals": renewals, "cert_late_renewals": late, "vpn_cuts": cuts,
            "fleet_enrolled_max": fleet, "patch_latency_mean_days": _mean(lat), "provisional": provisional,
            "until": months[-1].kpis["until"] if months else None}
    recs = recommendations(kpis, rules, units, deny, th)
    year_end = min(Month(year, 12).end, as_of) if as_of is not None else Month(year, 12).end
    plan = plan_figures(conn, year_end, months, th)
    recs += plan_proposals(plan, year, th)
    tables = {**plan, "trends": trends, "year_rules": rules, "year_units": units, "year_deny": deny,
              "recommendations": pd.DataFrame(recs, columns=["code", "subject", "value", "threshold", "text_vi", "text_en",
                                                             "evidence_vi", "evidence_en"])}
    return YearFigures(year=year, months=months, kpis=kpis, tables=tables, recommendations=recs)


def _fmt(v: float, digits: int = 1) -> str:
    return fmt.number(v, "vi", digits)


def _fmt_en(v: float, digits: int = 1) -> str:
    return fmt.number(v, "en", digits)


def recommendations(kpis: dict, rules: pd.DataFrame, units: pd.DataFrame, deny: pd.DataFrame, th: Thresholds) -> list[dict]:
    """Rules → proposals, worded for the IT-service plan; order is fixed (deterministic)."""
    out: list[dict] = []

    def add(*args):
        out.append(proposal(*args))

    rate = kpis.get("compliance_rate")
    if rate is not None and rate * 100 < th.compliance_target_pct:
        add("compliance_target", "", rate * 100, th.compliance_target_pct,
            "Tăng cường giám sát liên tục và hỗ trợ kỹ thuật để nâng tỷ lệ tuân thủ chung của thiết bị di động.",
            "Strengthen continuous monitoring and technical support to raise the overall device compliance rate.",
            f"Tỷ lệ tuân thủ cả năm {_fmt(rate * 100)} % (mục tiêu ≥ {_fmt(th.compliance_target_pct)} %).",
            f"Yearly compliance rate {_fmt_en(rate * 100)}% (target ≥ {_fmt_en(th.compliance_target_pct)}%).")
    for r in rules.itertuples(index=False):
        share = float(r.share) * 100 if r.share == r.share else 0.0
        if share > th.rule_share_pct:
            vi, en = pick(RULES, r.rule, "vi"), pick(RULES, r.rule, "en")
            add("rule_share", r.rule, share, th.rule_share_pct,
                f"Tăng cường kiểm soát quy tắc “{vi}”: bổ sung cấu hình bắt buộc, nhắc nhở tự động và hướng dẫn người dùng.",
                f"Strengthen enforcement of the rule “{en}”: mandatory configuration, automatic reminders and user guidance.",
                f"Quy tắc “{vi}” không đạt trong {_fmt(share)} % thiết bị-ngày ({_fmt(float(r.device_days))} thiết bị-ngày; ngưỡng {_fmt(th.rule_share_pct)} %).",
                f"Rule “{en}” failed in {_fmt_en(share)}% of device-days ({_fmt_en(float(r.device_days))} device-days; threshold {_fmt_en(th.rule_share_pct)}%).")
    for u in units.itertuples(index=False):
        if u.mean_hours is not None and u.mean_hours == u.mean_hours and u.mean_hours > th.slow_remediation_hours:
            add("slow_remediation", u.unit_code, float(u.mean_hours), th.slow_remediation_hours,
                f"Rút ngắn thời gian khắc phục tại {u.unit_name_vi}: phân công đầu mối hỗ trợ và quy định thời hạn xử lý.",
                f"Shorten remediation in the {u.unit_name_en or u.unit_name_vi}: assign a support contact and set handling deadlines.",
                f"Thời gian khắc phục trung bình {_fmt(float(u.mean_hours))} giờ qua {u.episodes} lần (ngưỡng {_fmt(th.slow_remediation_hours)} giờ).",
                f"Mean time to remediate {_fmt_en(float(u.mean_hours))} h over {u.episodes} episodes (threshold {_fmt_en(th.slow_remediation_hours)} h).")
    renewals, late = kpis.get("cert_renewals") or 0, kpis.get("cert_late_renewals") or 0
    if renewals and late / renewals * 100 > th.late_renewal_pct:
        pct = late / renewals * 100
        add("late_renewals", "", pct, th.late_renewal_pct,
            "Gia hạn chứng thư số thiết bị sớm hơn: tự động gia hạn trước hạn và theo dõi chứng thư sắp hết hạn hằng tuần.",
            "Renew device certificates earlier: automatic renewal ahead of expiry and a weekly review of expiring certificates.",
            f"{late}/{renewals} lượt gia hạn muộn ({_fmt(pct)} %; ngưỡng {_fmt(th.late_renewal_pct)} %).",
            f"{late}/{renewals} renewals were late ({_fmt_en(pct)}%; threshold {_fmt_en(th.late_renewal_pct)}%).")
    for d in deny.itertuples(index=False):
        share = float(d.share) * 100 if d.share == d.share else 0.0
        if share > th.deny_reason_pct and int(d.count) >= th.deny_reason_min:
            vi, en = pick(GATEWAY_REASONS, d.reason_code, "vi"), pick(GATEWAY_REASONS, d.reason_code, "en")
            add("deny_reason", d.reason_code, share, th.deny_reason_pct,
                f"Xử lý nguyên nhân từ chối truy cập tài liệu “{vi}”: rà soát cấu hình, hướng dẫn lãnh đạo và cán bộ hỗ trợ.",
                f"Address the main gateway deny reason “{en}”: review configuration, guide leaders and support staff.",
                f"{int(d.count)} lượt từ chối vì “{vi}” ({_fmt(share)} % tổng số lượt từ chối; ngưỡng {_fmt(th.deny_reason_pct)} %).",
                f"{int(d.count)} denials for “{en}” ({_fmt_en(share)}% of all denials; threshold {_fmt_en(th.deny_reason_pct)}%).")
    cuts, fleet = kpis.get("vpn_cuts") or 0, kpis.get("fleet_enrolled_max") or 0
    if fleet and cuts / fleet * 100 > th.vpn_cuts_per_100:
        per100 = cuts / fleet * 100
        add("vpn_cuts", "", per100, th.vpn_cuts_per_100,
            "Tăng cường bảo đảm an toàn kết nối VPN: sớm triển khai sản phẩm VPN chuyên dụng và cảnh báo sớm trước khi ngắt kết nối.",
            "Strengthen VPN security: deploy the dedicated hardened VPN product and warn devices before they are cut.",
            f"{cuts} lượt ngắt VPN trên {fleet} thiết bị ({_fmt(per100)} lượt/100 thiết bị; ngưỡng {_fmt(th.vpn_cuts_per_100)}).",
            f"{cuts} VPN cuts over {fleet} devices ({_fmt_en(per100)} per 100 devices; threshold {_fmt_en(th.vpn_cuts_per_100)}).")
    lat = kpis.get("patch_latency_mean_days")
    if lat is not None and lat > th.patch_latency_days:
        add("patch_latency", "", lat, th.patch_latency_days,
            "Đẩy nhanh cập nhật hệ điều hành: lập lịch cập nhật bắt buộc và nâng phiên bản tối thiểu trong chính sách tuân thủ.",
            "Speed up OS updates: schedule mandatory updates and raise the minimum OS version in the compliance policy.",
            f"Độ trễ cập nhật trung bình {_fmt(lat)} ngày (ngưỡng {_fmt(th.patch_latency_days)} ngày).",
            f"Mean patch latency {_fmt_en(lat)} days (threshold {_fmt_en(th.patch_latency_days)} days).")
    return out
