"""The monthly assessment: each measure judged đạt / chưa đạt against its threshold, the three
biggest risks, what became of last month's risks, and the short paragraphs a leader reads.

Everything here is a pure function of a month's figures and the thresholds; the wording lives
in this module (Vietnamese first, English with the same structure)."""
from __future__ import annotations

from dataclasses import dataclass

from . import fmt
from .document import unit_names
from .i18n import RULES, pick
from .thresholds import Thresholds

MEASURES = ("passcode", "encryption", "os", "certificate", "vpn", "gateway", "incidents")
MEASURE_NAMES = {
    "passcode": ("Mật mã mở khoá thiết bị", "Device passcode"),
    "encryption": ("Mã hoá dữ liệu trên thiết bị", "Data encryption on the device"),
    "os": ("Cập nhật hệ điều hành (iPadOS)", "OS currency (iPadOS)"),
    "certificate": ("Chứng thư số định danh thiết bị", "Device identity certificates"),
    "vpn": ("Ngắt mạng riêng ảo (VPN) khi thiết bị không tuân thủ", "VPN cut of non-compliant devices"),
    "gateway": ("Từ chối truy cập tài liệu từ thiết bị không tuân thủ", "Document access refused to non-compliant devices"),
    "incidents": ("Xử lý sự cố an toàn thông tin (chiếm quyền định danh, mất thiết bị)",
                  "Handling of information security incidents (identity takeover, lost devices)"),
}
VERDICT = {True: ("Đạt", "Met"), False: ("Chưa đạt", "Not met"), None: ("Không phát sinh", "Not exercised")}


@dataclass
class Measure:
    key: str
    value: str          # the figure, formatted
    target: str         # the threshold, formatted
    passed: bool | None  # None: nothing happened that the measure acts on
    basis: str          # what the figure was computed from


def _v(lang: str, vi: str, en: str) -> str:
    return vi if lang == "vi" else en


def _rate_measure(key, k, th: Thresholds, lang) -> Measure:
    dd = float(k.get("device_days") or 0)
    fail = float(k.get(f"{key}_fail_device_days") or 0)
    devices = int(k.get(f"{key}_fail_devices") or 0)
    target = th.measure_target_pct / 100
    if not dd:
        return Measure(key, fmt.NO_DATA, "≥ " + fmt.percent(target, lang, 0), None,
                       _v(lang, "Chưa có thiết bị được đánh giá trong kỳ.", "No device was assessed in the period."))
    rate = 1 - fail / dd
    basis = _v(lang, f"{fmt.number(fail, lang)} thiết bị-ngày vi phạm ({devices} thiết bị) trên {fmt.number(dd, lang)} thiết bị-ngày",
               f"{fmt.number(fail, lang)} failing device-days ({devices} devices) of {fmt.number(dd, lang)} device-days")
    return Measure(key, fmt.percent(rate, lang), "≥ " + fmt.percent(target, lang, 0), rate >= target - 1e-12, basis)


def measures(k: dict, th: Thresholds, lang: str) -> list[Measure]:
    out = [_rate_measure(key, k, th, lang) for key in ("passcode", "encryption", "os")]
    cert = _rate_measure("certificate", k, th, lang)
    expired, late, ren = int(k.get("certs_expired") or 0), int(k.get("cert_late_renewals") or 0), int(k.get("cert_renewals") or 0)
    cert.basis += _v(lang, f"; {expired} chứng thư đã hết hạn, {late}/{ren} lượt gia hạn muộn",
                     f"; {expired} expired, {late}/{ren} renewals late")
    if cert.passed is not None:
        cert.passed = bool(cert.passed and expired == 0)
    out.append(cert)
    owed, made = int(k.get("vpn_cuts_owed") or 0), int(k.get("vpn_cuts_made") or 0)
    vt = th.vpn_cut_target_pct / 100
    out.append(Measure("vpn", fmt.percent(made / owed, lang) if owed else fmt.NO_DATA, "≥ " + fmt.percent(vt, lang, 0),
                       (made / owed >= vt - 1e-12) if owed else None,
                       _v(lang, f"{made}/{owed} thiết bị chuyển sang không tuân thủ đã bị ngắt VPN",
                          f"{made} of {owed} devices turning non-compliant were cut from the VPN")))
    leaked, denied = int(k.get("gateway_allowed_while_failing") or 0), int(k.get("gateway_denied") or 0)
    total = denied + int(k.get("gateway_allowed") or 0)
    out.append(Measure("gateway", str(leaked), "0", leaked == 0 if total else None,
                       _v(lang, f"{leaked} lượt cho phép khi thiết bị không tuân thủ; {fmt.count(denied, lang)}/{fmt.count(total, lang)} lượt bị từ chối",
                          f"{leaked} accesses allowed while non-compliant; {fmt.count(denied, lang)} of {fmt.count(total, lang)} refused")))
    events, open_ = int(k.get("security_events") or 0), int(k.get("incidents_open") or 0)
    take, lost = int(k.get("takeover_attempts") or 0), int(k.get("lost_mode_enabled") or 0)
    out.append(Measure("incidents", str(open_), "0", (open_ == 0) if (events or lost) else None,
                       _v(lang, f"{open_} sự cố mức cao chưa xử lý; {events} sự kiện, {take} lần cố gắng chiếm quyền định danh, "
                                f"{lost} lệnh bật Chế độ mất",
                          f"{open_} high-severity incidents still open; {events} events, {take} takeover attempts, "
                          f"{lost} Lost Mode commands")))
    return out


# ------------------------------------------------------------------ risks
def risks(figures, th: Thresholds) -> list[dict]:
    """Every risk the month shows, most serious first: {key, priority, devices, value, vi, en}.
    Priority 0: a breach of a protection; 1: a measure or unit below target; 2: coming due."""
    k, t = figures.kpis, figures.tables
    out: list[dict] = []

    def add(key, priority, devices, value, vi, en):
        out.append({"key": key, "priority": priority, "devices": int(devices), "value": float(value), "vi": vi, "en": en})

    if k.get("incidents_open"):
        n = k["incidents_open"]
        add("incidents_open", 0, n, n, f"{n} sự cố an toàn thông tin mức cao chưa được xử lý",
            f"{n} high-severity information security incidents still open")
    if k.get("takeover_attempts"):
        n = k["takeover_attempts"]
        add("takeover", 0, n, n, f"{n} lần cố gắng chiếm quyền định danh thiết bị (đã bị chặn)",
            f"{n} attempts to take over a device identity (refused)")
    if k.get("gateway_allowed_while_failing"):
        n = k["gateway_allowed_while_failing"]
        add("gateway_leak", 0, n, n, f"{n} lượt truy cập tài liệu được cho phép khi thiết bị không tuân thủ",
            f"{n} document accesses allowed while the device was non-compliant")
    if k.get("certs_expired"):
        n = k["certs_expired"]
        add("certs_expired", 0, n, n, f"{n} thiết bị có chứng thư số định danh đã hết hạn",
            f"{n} devices with an expired identity certificate")
    owed, made = k.get("vpn_cuts_owed") or 0, k.get("vpn_cuts_made") or 0
    if owed > made:
        add("vpn_not_cut", 1, owed - made, owed - made, f"{owed - made} thiết bị không tuân thủ chưa bị ngắt VPN",
            f"{owed - made} non-compliant devices not cut from the VPN")
    units = t.get("compliance_units")
    if units is not None:
        for u in units.itertuples(index=False):
            if u.rate == u.rate and u.rate * 100 < th.compliance_target_pct and u.unit_code != "-":
                add(f"unit:{u.unit_code}", 1, u.devices, u.rate,
                    f"{u.unit_name_vi}: tỷ lệ tuân thủ {fmt.percent(u.rate, 'vi')} ({u.devices} thiết bị)",
                    f"{u.unit_name_en or u.unit_name_vi}: compliance {fmt.percent(u.rate, 'en')} ({u.devices} devices)")
    rules = t.get("rules")
    if rules is not None:
        for r in rules.itertuples(index=False):
            share = float(r.share) if r.share == r.share else 0.0
            if share * 100 > th.rule_share_pct:
                add(f"rule:{r.rule}", 1, r.devices, share,
                    f"Quy tắc “{pick(RULES, r.rule, 'vi')}” không đạt ở {r.devices} thiết bị ({fmt.percent(share, 'vi')} thiết bị-ngày)",
                    f"Rule “{pick(RULES, r.rule, 'en')}” failing on {r.devices} devices ({fmt.percent(share, 'en')} of device-days)")
    if k.get("certs_expiring_30d"):
        n = k["certs_expiring_30d"]
        add("certs_expiring", 2, n, n, f"{n} chứng thư số định danh thiết bị hết hạn trong 30 ngày tới",
            f"{n} device identity certificates expire within 30 days")
    if k.get("devices_behind_newest_os"):
        n = k["devices_behind_newest_os"]
        add("os_behind", 2, n, n, f"{n} thiết bị chưa cập nhật phiên bản iPadOS mới nhất",
            f"{n} devices not on the newest iPadOS")
    out.sort(key=lambda r: (r["priority"], -r["devices"], r["key"]))
    return out


def follow_up(previous: list[dict], current: list[dict], lang: str) -> list[str]:
    """What became of last month's three biggest risks, judged on this month's figures."""
    now = {r["key"]: r for r in current}
    lines = []
    for r in previous[:3]:
        title = r[lang]
        cur = now.get(r["key"])
        if cur is None:
            lines.append(_v(lang, f"{title}: đã khắc phục, không còn trong tháng này.",
                            f"{title}: resolved, no longer present this month."))
        elif cur["devices"] < r["devices"]:
            lines.append(_v(lang, f"{title}: đã giảm, còn {cur['devices']} thiết bị (tháng trước {r['devices']}).",
                            f"{title}: reduced to {cur['devices']} devices (last month {r['devices']})."))
        else:
            lines.append(_v(lang, f"{title}: chưa khắc phục, hiện {cur['devices']} thiết bị.",
                            f"{title}: not yet resolved, now {cur['devices']} devices."))
    return lines


# ------------------------------------------------------------------ paragraphs
ADVICE = {
    "passcode": ("Đề nghị các đơn vị nhắc lãnh đạo đặt mật mã mở khoá đạt yêu cầu; Trung tâm Tin học hỗ trợ trực tiếp các thiết bị còn vi phạm.",
                 "Units should remind leaders to set a compliant passcode; the IT Center supports the remaining devices in person."),
    "encryption": ("Đề nghị rà soát các thiết bị chưa bật mã hoá và đề nghị hoàn trả để cấu hình lại.",
                   "Review the devices without encryption and take them back for reconfiguration."),
    "os": ("Đề nghị cập nhật iPadOS cho các thiết bị còn chậm và đặt lịch cập nhật bắt buộc.",
           "Update iPadOS on the lagging devices and schedule mandatory updates."),
    "certificate": ("Đề nghị gia hạn sớm chứng thư số định danh thiết bị sắp hết hạn.",
                    "Renew device identity certificates well before they expire."),
    "vpn": ("Đề nghị kiểm tra kết nối giữa máy chủ quản lý và hệ thống mạng riêng ảo (VPN) để việc ngắt kết nối được thực hiện ngay.",
            "Check the link between the management server and the VPN so that cuts take effect at once."),
    "gateway": ("Đề nghị rà soát ngay cấu hình cổng truy cập tài liệu.", "Review the document gateway's configuration at once."),
    "incidents": ("Đề nghị bộ phận an toàn thông tin xử lý dứt điểm các sự cố còn tồn đọng.",
                  "The security staff should close the open incidents."),
}


def paragraphs(figures, previous_kpis: dict | None, ms: list[Measure], th: Thresholds, lang: str, period_label: str,
               previous_label: str) -> dict[str, list[str]]:
    """{overall, shortcomings, recommendations}: the assessment text before the tables."""
    k = figures.kpis
    rate, prev = k.get("compliance_rate"), (previous_kpis or {}).get("compliance_rate")
    fleet, units = k.get("fleet_enrolled") or 0, figures.tables["fleet"]
    n_units = int((units["enrolled"] > 0).sum()) if len(units) else 0
    met = sum(1 for m in ms if m.passed)
    judged = sum(1 for m in ms if m.passed is not None)
    target = fmt.percent(th.compliance_target_pct / 100, lang, 0)
    if rate is None:
        overall = [_v(lang, f"Trong {period_label}, chưa có thiết bị nào được đánh giá tuân thủ.",
                      f"In {period_label}, no device was assessed for compliance.")]
    else:
        above = rate * 100 >= th.compliance_target_pct
        change = ""
        if prev is not None:
            delta = (rate - prev) * 100
            up = delta >= 0
            size = fmt.number(abs(delta), lang)
            change = _v(lang, f", {'tăng' if up else 'giảm'} {size} điểm phần trăm so với {previous_label}",
                        f", {'up' if up else 'down'} {size} percentage points on {previous_label}")
        overall = [_v(lang,
                      f"Trong {period_label}, hệ thống quản lý {fmt.count(fleet, lang)} thiết bị của {n_units} đơn vị. "
                      f"Tỷ lệ tuân thủ chung đạt {fmt.percent(rate, lang)}{change}, "
                      f"{'đạt' if above else 'chưa đạt'} mục tiêu {target}.",
                      f"In {period_label}, {fmt.count(fleet, lang)} devices in {n_units} units were managed. "
                      f"Overall compliance was {fmt.percent(rate, lang)}{change}, "
                      f"{'meeting' if above else 'below'} the {target} target.")]
    overall.append(_v(lang, f"{met}/{judged} biện pháp được đánh giá đạt yêu cầu.", f"{met} of {judged} measures assessed were met."))

    unit_rows = figures.tables.get("measure_units")
    short, recs = [], []
    for m in ms:
        if m.passed is not False:
            continue
        name = MEASURE_NAMES[m.key][0 if lang == "vi" else 1]
        cause = ""
        if unit_rows is not None and len(unit_rows):
            top = unit_rows[unit_rows["measure"] == m.key].head(2)
            if len(top):
                names = ", ".join(unit_names(top, lang))
                cause = _v(lang, f" Vi phạm tập trung ở {names}.", f" Failures are concentrated in {names}.")
        short.append(_v(lang, f"{name}: chưa đạt ({m.value}; yêu cầu {m.target}) — {m.basis}.{cause}",
                        f"{name}: not met ({m.value}; required {m.target}) — {m.basis}.{cause}"))
        recs.append(ADVICE[m.key][0 if lang == "vi" else 1])
    if not short:
        short.append(_v(lang, "Không có biện pháp nào chưa đạt yêu cầu trong kỳ.", "No measure fell short in the period."))
    if rate is not None and rate * 100 < th.compliance_target_pct:
        recs.append(_v(lang, "Đề nghị thủ trưởng các đơn vị có tỷ lệ tuân thủ thấp chỉ đạo khắc phục trong thời hạn khắc phục đã quy định.",
                       "Heads of the units with low compliance should see to remediation within the set remediation period."))
    if not recs:
        recs.append(_v(lang, "Đề nghị tiếp tục duy trì các biện pháp hiện hành.", "Keep the current measures in place."))
    return {"overall": overall, "shortcomings": short, "recommendations": recs}
