"""Year-end proposals for next year's IT-service plan that come from the fleet as it stands at
the end of the year: units below the compliance target (named in full), iPads that cannot run
the iPadOS the plan requires, and identity certificates that fall due next year."""
from __future__ import annotations

import pandas as pd
from sqlalchemy.engine import Connection

from . import fmt, loaders
from .thresholds import Thresholds

# The newest iPadOS major version each older iPad model runs (Apple's published support
# lists); models not listed run the current release. Keyed by the product identifier prefix.
MAX_IPADOS = {
    "iPad4,": 12, "iPad5,": 15, "iPad6,3": 16, "iPad6,4": 16, "iPad6,7": 16, "iPad6,8": 16, "iPad6,11": 16, "iPad6,12": 16,
    "iPad7,1": 17, "iPad7,2": 17, "iPad7,3": 17, "iPad7,4": 17, "iPad7,5": 17, "iPad7,6": 17, "iPad7,11": 18, "iPad7,12": 18,
}


def max_ipados(product: str | None) -> int | None:
    """'iPad7,11' → 18; None for a model that runs the current release (or an unknown one)."""
    if not product:
        return None
    return MAX_IPADOS.get(product, MAX_IPADOS.get(product.split(",")[0] + ","))


def plan_figures(conn: Connection, year_end, months, th: Thresholds) -> dict[str, pd.DataFrame]:
    """units_below, old_devices, cert_due: the figures behind the plan proposals."""
    cu = pd.concat([f.tables["compliance_units"] for f in months] + [pd.DataFrame(
        columns=["unit_code", "unit_name_vi", "unit_name_en", "devices", "device_days", "compliant", "rate"])], ignore_index=True)
    if len(cu):
        g = cu.groupby(["unit_code", "unit_name_vi", "unit_name_en"], dropna=False, as_index=False)[["device_days", "compliant"]].sum()
        g["rate"] = g["compliant"] / g["device_days"].where(g["device_days"] > 0)
        units_below = g[(g["rate"] * 100 < th.compliance_target_pct) & (g["unit_code"] != "-")]
        units_below = units_below.sort_values(["rate", "unit_code"], kind="mergesort").reset_index(drop=True)
    else:
        units_below = pd.DataFrame(columns=["unit_code", "unit_name_vi", "unit_name_en", "device_days", "compliant", "rate"])

    devices = loaders.load_devices(conn, year_end)
    fleet = devices[(devices["enrollment_state"] == "enrolled")
                    & (devices["checked_out_at"].isna() | (devices["checked_out_at"] >= year_end))].copy()
    fleet["max_ipados"] = fleet["product_name"].map(max_ipados)
    old = fleet[fleet["max_ipados"].notna() & (fleet["max_ipados"] < th.plan_min_ipados)]
    units = loaders.load_units(conn).set_index("unit_id")
    old = old.assign(unit_name_vi=old["unit_id"].map(units["name_vi"]).fillna(""),
                     unit_name_en=old["unit_id"].map(units["name_en"]).fillna(""),
                     model=old["model_name"].fillna(old["product_name"]))
    old_devices = old[["serial_number", "model", "max_ipados", "os_version", "unit_name_vi", "unit_name_en"]].sort_values(
        ["unit_name_vi", "serial_number"], kind="mergesort").reset_index(drop=True)
    old_devices["max_ipados"] = old_devices["max_ipados"].astype(int)

    certs = loaders.load_certificates(conn, year_end)
    valid = certs[(certs["revoked_at"].isna() | (certs["revoked_at"] >= year_end)) & certs["device_id"].isin(fleet["device_id"])]
    newest = valid.groupby("device_id").tail(1)
    next_start = pd.Timestamp(year_end)
    due = newest[(newest["not_after"] >= next_start) & (newest["not_after"] < next_start + pd.DateOffset(years=1))]
    by_month = due["not_after"].map(lambda t: fmt._local(t).strftime("%Y-%m")).value_counts().sort_index()
    cert_due = pd.DataFrame({"month": by_month.index, "expiring": by_month.to_numpy()})
    return {"units_below": units_below, "old_devices": old_devices, "cert_due": cert_due}


def proposal(code, subject, value, threshold, vi, en, ev_vi, ev_en) -> dict:
    """One proposal for the IT-service plan: what to do (vi/en) and the figures behind it (vi/en)."""
    return {"code": code, "subject": subject, "value": value, "threshold": threshold, "text_vi": vi, "text_en": en,
            "evidence_vi": ev_vi, "evidence_en": ev_en}


def plan_proposals(plan: dict[str, pd.DataFrame], year: int, th: Thresholds) -> list[dict]:
    out: list[dict] = []

    def add(*args):
        out.append(proposal(*args))

    ub = plan["units_below"]
    if len(ub):
        names_vi = "; ".join(f"{r.unit_name_vi} ({fmt.percent(r.rate, 'vi')})" for r in ub.itertuples(index=False))
        names_en = "; ".join(f"{(r.unit_name_en or r.unit_name_vi)} ({fmt.percent(r.rate, 'en')})" for r in ub.itertuples(index=False))
        add("units_below_target", ",".join(ub["unit_code"]), float(ub["rate"].min() * 100), th.compliance_target_pct,
            f"Bố trí hỗ trợ kỹ thuật tại chỗ và kiểm tra định kỳ hằng quý đối với {len(ub)} đơn vị có tỷ lệ tuân thủ cả năm dưới mục tiêu.",
            f"Provide on-site technical support and quarterly checks for the {len(ub)} units whose yearly compliance is below target.",
            f"Các đơn vị dưới mục tiêu {fmt.percent(th.compliance_target_pct / 100, 'vi', 0)}: {names_vi}.",
            f"Units below the {fmt.percent(th.compliance_target_pct / 100, 'en', 0)} target: {names_en}.")
    od = plan["old_devices"]
    if len(od):
        models = od["model"].value_counts().sort_index()
        mv = ", ".join(f"{m}: {n}" for m, n in models.items())
        add("replace_devices", "", float(len(od)), float(th.plan_min_ipados),
            f"Lập dự toán thay thế {len(od)} thiết bị không thể nâng cấp lên iPadOS {th.plan_min_ipados} trong năm {year + 1}.",
            f"Budget the replacement of {len(od)} iPads that cannot run iPadOS {th.plan_min_ipados} in {year + 1}.",
            f"{len(od)} thiết bị chỉ hỗ trợ tới iPadOS {int(od['max_ipados'].max())} ({mv}).",
            f"{len(od)} devices support iPadOS {int(od['max_ipados'].max())} at most ({mv}).")
    cd = plan["cert_due"]
    if len(cd):
        total = int(cd["expiring"].sum())
        peak = cd.sort_values(["expiring", "month"], ascending=[False, True], kind="mergesort").iloc[0]
        add("cert_due", "", float(total), 0.0,
            f"Lập lịch gia hạn {total} chứng thư số định danh thiết bị hết hạn trong năm {year + 1}, ưu tiên {fmt.month_label(peak['month'], 'vi')}.",
            f"Schedule the renewal of {total} device identity certificates expiring in {year + 1}, first for {fmt.month_label(peak['month'], 'en')}.",
            f"{total} chứng thư hết hạn trong năm {year + 1}; nhiều nhất {int(peak['expiring'])} chứng thư trong {fmt.month_label(peak['month'], 'vi')}.",
            f"{total} certificates expire in {year + 1}; the most, {int(peak['expiring'])}, in {fmt.month_label(peak['month'], 'en')}.")
    return out
