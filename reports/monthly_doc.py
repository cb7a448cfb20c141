"""The monthly report as a document: a one-page summary, the assessment, signature, appendices."""
from __future__ import annotations

import datetime as dt

import pandas as pd

from . import assessment, charts, fmt, i18n
from .document import (
    Document,
    Numbering,
    Section,
    add_figure,
    add_table,
    closing,
    heading,
    sheets_of,
    unit_names,
)
from .i18n import RULES, pick, text
from .official import Issuer
from .thresholds import Thresholds, describe
from .trace import trace_table


def _v(lang, vi, en):
    return vi if lang == "vi" else en


def provisional_notice(period, lang: str) -> str:
    if not period.provisional:
        return ""
    until = fmt.datetime(period.until, lang)
    return _v(lang, f"Báo cáo tạm tính đến {until} (tháng chưa kết thúc); số liệu sẽ được tính lại khi hết tháng.",
              f"Provisional, up to {until}: the month has not ended; the figures will be recomputed when it has.")


def measures_frame(ms: list[assessment.Measure], lang: str) -> pd.DataFrame:
    i = 0 if lang == "vi" else 1
    return pd.DataFrame([{"measure": assessment.MEASURE_NAMES[m.key][i], "result": m.value, "target": m.target,
                          "verdict": assessment.VERDICT[m.passed][i], "basis": m.basis} for m in ms])


def monthly_document(current, previous_kpis: dict | None, previous_risks: list | None, mom: pd.DataFrame, lang: str,
                     opts, thresholds: Thresholds, issuer: Issuer, number: int | None, issued_on: dt.date) -> Document:
    period = current.month
    month = period.month
    k, t = current.kpis, current.tables
    num = Numbering(lang)
    label, prev_label = fmt.month_label(str(month), lang), fmt.month_label(str(month.previous), lang)
    subject = _v(lang, f"Đánh giá hiệu quả các biện pháp bảo đảm an toàn thông tin trên thiết bị di động {label}",
                 f"Effectiveness of information security measures on mobile devices, {label}")
    head = heading(issuer, lang, number, issued_on, subject, provisional_notice(period, lang))

    ms = assessment.measures(k, thresholds, lang)
    risks = assessment.risks(current, thresholds)
    text_parts = assessment.paragraphs(current, previous_kpis, ms, thresholds, lang, label, prev_label)

    # I. One-page summary
    summary = Section(_v(lang, "I. TÓM TẮT KẾT QUẢ", "I. SUMMARY"))
    summary.blocks.append(text_parts["overall"][0])
    mf = measures_frame(ms, lang)
    summary.blocks.append(num.table(_v(lang, "Kết quả đánh giá các biện pháp bảo đảm an toàn thông tin",
                                       "Assessment of the information security measures"),
                                    mf.drop(columns=["basis"]).rename(columns={c: pick(i18n.COLUMNS, c, lang) for c in mf.columns})))
    summary.blocks.append(_v(lang, "**Ba rủi ro lớn nhất trong kỳ:", "**The three biggest risks of the period:"))
    if risks:
        summary.blocks += [("bullet", r[lang]) for r in risks[:3]]
    else:
        summary.blocks.append(("bullet", _v(lang, "Không phát hiện rủi ro đáng kể.", "No significant risk was found.")))
    summary.blocks.append(_v(lang, "**Kết quả xử lý các rủi ro nêu trong báo cáo tháng trước:",
                             "**What became of the risks named last month:"))
    if previous_risks is None:
        summary.blocks.append(("bullet", _v(lang, "Chưa có số liệu của tháng trước.", "No figures for the previous month.")))
    elif not previous_risks:
        summary.blocks.append(("bullet", _v(lang, "Báo cáo tháng trước không nêu rủi ro nào.", "Last month's report named no risk.")))
    else:
        summary.blocks += [("bullet", line) for line in assessment.follow_up(previous_risks, risks, lang)]

    # The overall sentence already opens the summary on page 1: section II goes on from it.
    overall = Section(_v(lang, "II. ĐÁNH GIÁ CHUNG", "II. OVERALL ASSESSMENT"), blocks=list(text_parts["overall"][1:]))
    overall.blocks += [("bullet", f"{assessment.MEASURE_NAMES[m.key][0 if lang == 'vi' else 1]}: "
                                  f"{assessment.VERDICT[m.passed][0 if lang == 'vi' else 1].lower()} — {m.basis}.") for m in ms]
    short = Section(_v(lang, "III. TỒN TẠI, HẠN CHẾ VÀ NGUYÊN NHÂN", "III. SHORTCOMINGS AND CAUSES"),
                    blocks=[("bullet", s) for s in text_parts["shortcomings"]])
    recs = Section(_v(lang, "IV. ĐỀ XUẤT, KIẾN NGHỊ", "IV. RECOMMENDATIONS"),
                   blocks=[("bullet", s) for s in text_parts["recommendations"]])
    body = [summary, overall, short, recs]

    appendix = _detail_sections(current, mom, lang, opts, num)
    trace = trace_table(k, lang)
    app2 = Section(_v(lang, "PHỤ LỤC II. NGUỒN GỐC SỐ LIỆU", "APPENDIX II. WHERE EACH FIGURE COMES FROM"))
    app2.blocks.append(_v(lang, "Mỗi chỉ số chính được nêu cùng định nghĩa, bảng dữ liệu nguồn và số lượng làm căn cứ tính.",
                          "Each headline figure with its definition, its source tables and the count it was computed from."))
    app2.blocks.append(num.table(_v(lang, "Nguồn gốc các chỉ số chính", "Sources of the headline figures"),
                                 trace[["indicator", "value", "definition", "sources", "basis"]].rename(
                                     columns={c: pick(i18n.COLUMNS, c, lang) for c in ("indicator", "value", "definition",
                                                                                       "sources", "basis")})))
    app3 = Section(_v(lang, "PHỤ LỤC III. PHƯƠNG PHÁP TÍNH VÀ NGƯỠNG ĐÁNH GIÁ", "APPENDIX III. METHOD AND THRESHOLDS"))
    app3.blocks += [p.format(late=opts.late_renewal_days) for p in i18n.METHOD[lang]]
    app3.blocks += [("bullet", s) for s in describe(thresholds, lang)[:3]]
    appendix += [app2, app3]

    sheet_tables = {"measures": mf, "summary": _summary_frame(mom), "trace": trace.drop(columns=["value"]), **t}
    sheets, keys = sheets_of(sheet_tables, lang)
    title = f"{head.kind} {subject}"
    return Document(lang, title, head, body, closing(issuer, lang), appendix, sheets, keys, period.end)


def _summary_frame(mom: pd.DataFrame) -> pd.DataFrame:
    """Month-over-month: rates in %, their change in percentage points."""
    df = mom.copy()
    pp = df["unit"] == "pp"
    for col in ("value", "previous"):
        df[col] = [None if fmt.missing(v) else (float(v) * 100 if p else v) for v, p in zip(df[col], pp)]
    return df[["indicator", "value", "previous", "change"]]


def _detail_sections(current, mom, lang, opts, num: Numbering) -> list[Section]:
    k, t = current.kpis, current.tables
    nodata = text("no_data", lang)
    app = Section(_v(lang, "PHỤ LỤC I. SỐ LIỆU CHI TIẾT", "APPENDIX I. DETAILED FIGURES"))
    secs = [app]

    def sub(n, key):
        s = Section(f"{n}. {text(key, lang)}", level=2)
        secs.append(s)
        return s.blocks

    b = sub(1, "summary")
    add_table(b, num, _v(lang, "Giá trị kỳ này, kỳ trước và mức thay đổi", "This period, the previous one and the change"), _summary_frame(mom), lang, nodata)
    b = sub(2, "fleet")
    add_table(b, num, _v(lang, "Số thiết bị theo đơn vị", "Devices by unit"), t["fleet"], lang, _v(lang, "Chưa có thiết bị nào đăng ký.", "No device enrolled yet."))

    b = sub(3, "compliance")
    daily, cu = t["compliance_daily"], t["compliance_units"]
    rate = k.get("compliance_rate")
    b.append(_v(lang, f"Tỷ lệ tuân thủ của kỳ: {fmt.percent(rate, lang)} trên {fmt.number(k['device_days'], lang)} thiết bị-ngày "
                      f"được đánh giá.", f"Compliance rate of the period: {fmt.percent(rate, lang)} over "
                                          f"{fmt.number(k['device_days'], lang)} device-days assessed.")
             if rate is not None else nodata)
    day_labels = [fmt.iso_date(d, lang)[:5] if lang == "vi" else d[8:] + "/" + d[5:7] for d in daily["date"]]
    add_figure(b, num, text("chart_compliance", lang), charts.line(day_labels, (daily["rate"] * 100).tolist(), lang),
               _v(lang, "Không vẽ biểu đồ tuân thủ theo ngày: chưa có thiết bị nào được đánh giá trong kỳ.",
                  "No daily compliance chart: no device was assessed in the period."))
    if len(daily) and daily["device_days"].eq(0).any() and daily["device_days"].gt(0).any():
        b.append(_v(lang, "Những ngày chưa có thiết bị được đánh giá để trống trên biểu đồ và ghi “–” trong bảng.",
                    "Days with no device assessed are gaps in the chart and “–” in the table."))
    names = unit_names(cu, lang)
    if len(cu) > 1:
        add_figure(b, num, text("chart_units", lang), charts.bars(names.tolist(), (cu["rate"] * 100).tolist(), lang,
                                                                   horizontal=True, percent=True), "")
    add_table(b, num, text("compliance_units", lang), cu, lang, nodata)
    add_table(b, num, text("compliance_daily", lang), daily, lang, nodata)

    b = sub(4, "rules")
    rules = t["rules"]
    add_figure(b, num, text("chart_rules", lang),
               charts.bars([pick(RULES, r, lang) for r in rules["rule"]], rules["device_days"].tolist(), lang, horizontal=True)
               if len(rules) else None,
               _v(lang, "Không có quy tắc nào bị vi phạm trong kỳ.", "No rule failed in the period."))
    if len(rules):
        add_table(b, num, _v(lang, "Thiết bị-ngày không đạt theo quy tắc", "Failing device-days by rule"), rules, lang, nodata)
    add_table(b, num, text("never", lang), t["never_compliant"], lang,
              _v(lang, "Không có thiết bị nào không tuân thủ trong suốt kỳ.", "No device was non-compliant for the whole period."))

    b = sub(5, "remediation")
    if k["remediation_episodes"]:
        b.append(_v(lang, f"{k['remediation_episodes']} lần khắc phục; trung bình {fmt.hours(k['remediation_mean_hours'], lang)}; "
                          f"p90 {fmt.hours(k['remediation_p90_hours'], lang)}; {k['open_episodes']} thiết bị chưa khắc phục xong cuối kỳ.",
                    f"{k['remediation_episodes']} episodes; mean {fmt.hours(k['remediation_mean_hours'], lang)}; "
                    f"p90 {fmt.hours(k['remediation_p90_hours'], lang)}; {k['open_episodes']} still open at the end of the period."))
        add_table(b, num, _v(lang, "Thời gian khắc phục theo đơn vị", "Time to remediate by unit"), t["remediation_units"], lang, nodata)
        add_table(b, num, text("remediation_episodes", lang), t["remediation_episodes"], lang, nodata)
    else:
        b.append(_v(lang, f"Không có lần khắc phục nào kết thúc trong kỳ; {k['open_episodes']} thiết bị chưa khắc phục xong cuối kỳ.",
                    f"No remediation episode ended in the period; {k['open_episodes']} still open at its end."))

    b = sub(6, "os")
    osd = t["os_spread"]
    add_figure(b, num, text("chart_os", lang), charts.bars(osd["os_version"].tolist(), osd["devices"].tolist(), lang)
               if len(osd) else None, _v(lang, "Chưa có thiết bị nào báo cáo phiên bản hệ điều hành.", "No device reported its OS version."))
    add_table(b, num, text("chart_os", lang), osd, lang, nodata)
    add_table(b, num, _v(lang, "Độ trễ cập nhật hệ điều hành", "OS patch latency"), t["patch_latency"], lang,
              _v(lang, "Không có phiên bản iPadOS mới nào cần triển khai trong kỳ.", "No new iPadOS version to roll out in the period."))

    b = sub(7, "certs")
    b.append(_v(lang, f"Hết hạn trong 30 ngày: {k['certs_expiring_30d']}; trong 60 ngày: {k['certs_expiring_60d']}; "
                      f"đã hết hạn: {k['certs_expired']}; gia hạn: {k['cert_renewals']} (muộn: {k['cert_late_renewals']}).",
                f"Expiring within 30 days: {k['certs_expiring_30d']}; within 60 days: {k['certs_expiring_60d']}; "
                f"expired: {k['certs_expired']}; renewals: {k['cert_renewals']} (late: {k['cert_late_renewals']})."))
    add_table(b, num, text("certs_expiring", lang, days=max(opts.cert_windows)), t["certs_expiring"], lang,
              _v(lang, "Không có chứng thư nào sắp hết hạn.", "No certificate is about to expire."))
    add_table(b, num, text("cert_renewals", lang), t["cert_renewals"], lang,
              _v(lang, "Không có lượt gia hạn chứng thư nào trong kỳ.", "No certificate was renewed in the period."))

    b = sub(8, "gateway")
    gd = t["gateway_daily"]
    add_figure(b, num, text("chart_gateway", lang),
               charts.stacked([d[8:] for d in gd["date"]], gd["allow"], gd["deny"], (text("allow", lang), text("deny", lang)), lang),
               _v(lang, "Không có lượt truy cập tài liệu nào trong kỳ.", "No document access in the period."))
    add_table(b, num, _v(lang, "Truy cập tài liệu theo lý do", "Document access by reason"), t["gateway_reasons"], lang, nodata)
    add_table(b, num, _v(lang, "Truy cập tài liệu theo đơn vị của lãnh đạo", "Document access by the leader's unit"),
              t["gateway_units"], lang, nodata)

    b = sub(9, "actions")
    add_table(b, num, _v(lang, "Số lệnh theo loại", "Commands by type"), t["protective_actions"], lang, nodata)
    add_table(b, num, _v(lang, "Danh sách lệnh bảo vệ thiết bị", "Protective commands"), t["protective_events"], lang,
              _v(lang, "Không có lệnh khoá, bật Chế độ mất hay xoá dữ liệu nào trong kỳ.", "No lock, Lost Mode or erase command in the period."))

    b = sub(10, "vpn")
    b.append(_v(lang, f"Ngắt: {k['vpn_cuts']} lượt ({k['vpn_devices_cut']} thiết bị); khôi phục: {k['vpn_restores']} lượt.",
                f"Cuts: {k['vpn_cuts']} ({k['vpn_devices_cut']} devices); restores: {k['vpn_restores']}."))
    add_table(b, num, _v(lang, "Ngắt và khôi phục VPN theo lý do", "VPN cuts and restores by reason"), t["vpn_events"], lang, _v(lang, "Không có lượt ngắt hay khôi phục VPN nào trong kỳ.",
                                                                    "No VPN cut or restore in the period."))

    b = sub(11, "incidents")
    b.append(_v(lang, f"Sự kiện an toàn thông tin trong kỳ: {k['security_events']}, trong đó {k['security_incidents']} ở mức "
                      f"nghiêm trọng hoặc cao; {k['takeover_attempts']} lần cố gắng chiếm quyền định danh thiết bị.",
                f"Information security events in the period: {k['security_events']}, of which {k['security_incidents']} "
                f"critical or high; {k['takeover_attempts']} attempts to take over a device identity."))
    add_table(b, num, _v(lang, "Sự kiện theo mức độ và loại", "Events by severity and kind"), t["incidents"], lang, _v(lang, "Không có sự kiện nào.", "No event."))
    add_table(b, num, text("incident_events", lang), t["incident_events"], lang, _v(lang, "Không có sự kiện nào.", "No event."))
    cp = t["audit_checkpoint"]
    _audit_checkpoint(b, cp, lang)
    _ddm_section(sub(12, "ddm"), t, lang, num, nodata)
    _apps_section(sub(13, "apps"), t, lang, num)
    _tokens_section(sub(14, "usb_tokens"), k, t, lang, num)
    _vpn_migration_section(sub(15, "vpn_migration"), k, t, lang, num)
    return secs


def _vpn_migration_section(b, k, t, lang, num) -> None:
    n = lambda key: fmt.number(k.get(key) or 0, lang)
    rate = k.get("vpn_tunnel_seen_rate")
    rate_text = fmt.percent(rate, lang) if rate is not None else "–"
    b.append(_v(lang, f"iPad có mạng riêng ảo (VPN) được cài: {n('vpn_devices_with_vpn')}; còn dùng OpenVPN: "
                      f"{n('vpn_devices_openvpn')}; kết nối VPN được cổng VPN ghi nhận trong kỳ: {n('vpn_tunnel_seen')} "
                      f"iPad ({rate_text}).",
                f"iPads with a VPN installed: {n('vpn_devices_with_vpn')}; still on OpenVPN: {n('vpn_devices_openvpn')}; "
                f"tunnels seen by a VPN gateway in the period: {n('vpn_tunnel_seen')} iPads ({rate_text})."))
    add_table(b, num, _v(lang, "Mạng riêng ảo (VPN) đang cài trên iPad theo đơn vị", "VPNs installed on the iPads by unit"),
              t.get("vpn_installed"), lang, _v(lang, "Chưa có iPad nào báo cáo VPN đã cài.", "No iPad has reported an installed VPN."))
    add_table(b, num, _v(lang, "Tiến độ chuyển đổi VPN theo đơn vị", "VPN migration progress by unit"),
              t.get("vpn_campaign_progress"), lang, _v(lang, "Chưa có đợt chuyển đổi VPN nào.", "No VPN migration campaign yet."))
    add_table(b, num, _v(lang, "iPad còn dùng OpenVPN", "iPads still on OpenVPN"), t.get("vpn_still_openvpn"), lang,
              _v(lang, "Không còn iPad nào dùng OpenVPN.", "No iPad is on OpenVPN any more."))


def _tokens_section(b, k, t, lang, num) -> None:
    n = lambda key: fmt.number(k.get(key, 0), lang)
    b.append(_v(lang, f"USB token đang quản lý cuối kỳ: {n('usb_tokens')}; chứng thư số ký hết hạn trong 30 ngày hoặc đã hết hạn: "
                      f"{n('usb_tokens_expiring_30d')}; bị mất trong kỳ: {n('usb_tokens_lost')}; chưa hoàn trả: "
                      f"{n('usb_tokens_not_returned')}.",
                f"USB tokens held at the end of the period: {n('usb_tokens')}; signing certificates expiring within 30 days "
                f"or expired: {n('usb_tokens_expiring_30d')}; lost in the period: {n('usb_tokens_lost')}; not handed back: "
                f"{n('usb_tokens_not_returned')}."))
    add_table(b, num, _v(lang, "USB token có chứng thư số ký sắp hết hạn hoặc đã hết hạn",
                         "USB tokens whose signing certificate expires soon or has expired"), t.get("usb_tokens_expiring"), lang,
              _v(lang, "Không có chứng thư số ký nào hết hạn trong 30 ngày sau cuối kỳ.",
                 "No signing certificate expires within 30 days after the period."))
    add_table(b, num, _v(lang, "USB token bị mất trong kỳ", "USB tokens lost in the period"), t.get("usb_tokens_lost"), lang,
              _v(lang, "Không có USB token nào bị mất trong kỳ.", "No USB token was lost in the period."))
    add_table(b, num, _v(lang, "USB token chưa hoàn trả", "USB tokens not handed back"), t.get("usb_tokens_not_returned"), lang,
              _v(lang, "Không có USB token nào chưa hoàn trả.", "Every USB token that should have come back did."))


def _apps_section(b, t, lang, num) -> None:
    cov = t.get("app_coverage")
    for row in (cov.itertuples() if cov is not None else ()):
        pct = fmt.percent(row.coverage, lang) if row.coverage is not None and not pd.isna(row.coverage) else "–"
        if row.days_to_95 is None or pd.isna(row.days_to_95):
            reach = _v(lang, "chưa đạt 95 % số thiết bị", "95 % of the iPads not reached yet")
        else:
            reach = _v(lang, f"đạt 95 % số thiết bị sau {fmt.number(round(row.days_to_95, 1), lang)} ngày",
                       f"95 % of the iPads reached after {fmt.number(round(row.days_to_95, 1), lang)} days")
        b.append(_v(lang, f"{row.app}: phiên bản đã nghiệm thu {row.accepted_version} (ngày {fmt.datetime(row.accepted_at, lang)}) "
                          f"có trên {fmt.number(row.at_accepted, lang)}/{fmt.number(row.devices, lang)} thiết bị ({pct}); "
                          f"{reach}; {fmt.number(row.behind, lang)} thiết bị chưa cập nhật.",
                    f"{row.app}: accepted version {row.accepted_version} ({fmt.datetime(row.accepted_at, lang)}) on "
                    f"{fmt.number(row.at_accepted, lang)}/{fmt.number(row.devices, lang)} iPads ({pct}); {reach}; "
                    f"{fmt.number(row.behind, lang)} behind."))
    add_table(b, num, _v(lang, "Triển khai phiên bản đã nghiệm thu", "Coverage of the accepted release"), cov, lang,
              _v(lang, "Chưa có phiên bản ứng dụng nào được nghiệm thu.", "No app release has been accepted yet."))
    add_table(b, num, _v(lang, "Triển khai theo đơn vị", "Coverage by unit"), t.get("app_coverage_units"), lang,
              _v(lang, "Chưa có số liệu theo đơn vị.", "No figures by unit yet."))


def _audit_checkpoint(b, cp, lang) -> None:
    if len(cp):
        row = cp.iloc[0]
        b.append(text("audit_checkpoint", lang, seq=int(row["seq"]), hash=str(row["head_hash"]),
                      at=fmt.datetime(row["at"], lang)))
    else:
        b.append(text("audit_checkpoint_none", lang))


def _ddm_section(b, t, lang, num, nodata) -> None:
    n = int(t["ddm_devices"]["devices"].iloc[0]) if "ddm_devices" in t else 0
    enf = t.get("os_enforcement")
    b.append(_v(lang, f"Thiết bị nhận cấu hình theo khai báo và tự báo trạng thái (iPadOS 17 trở lên): {fmt.number(n, lang)}.",
                f"Devices on declarative management, reporting their own status (iPadOS 17 or later): {fmt.number(n, lang)}."))
    for row in (enf.itertuples() if enf is not None else ()):
        when = fmt.datetime(row.deadline, lang)
        by = "–" if row.at_target_by_deadline is None or pd.isna(row.at_target_by_deadline) else fmt.number(int(row.at_target_by_deadline), lang)
        b.append(_v(lang, f"Cập nhật iPadOS {row.target_version} hạn {when}: {fmt.number(row.devices, lang)} thiết bị áp dụng; "
                          f"đạt đúng hạn {by}; đạt cuối kỳ {fmt.number(row.at_target, lang)}; quá hạn {fmt.number(row.overdue, lang)}; "
                          f"cài đặt lỗi {fmt.number(row.update_failures, lang)}.",
                    f"iPadOS {row.target_version} due {when}: {fmt.number(row.devices, lang)} devices; at target by the "
                    f"deadline {by}; at the end {fmt.number(row.at_target, lang)}; overdue {fmt.number(row.overdue, lang)}; "
                    f"install failures {fmt.number(row.update_failures, lang)}."))
    add_table(b, num, _v(lang, "Yêu cầu cập nhật iPadOS bắt buộc", "Enforced iPadOS updates"), enf, lang,
              _v(lang, "Không có yêu cầu cập nhật iPadOS bắt buộc nào trong kỳ.", "No enforced iPadOS update in the period."))
    failures = t.get("os_update_failures")
    if failures is not None and lang == "vi":
        failures = failures.drop(columns=["device_reason"])  # the device's own words are English: in the XLSX file
    add_table(b, num, _v(lang, "Thiết bị cài đặt bản cập nhật không thành công", "Devices whose update failed"), failures, lang,
              _v(lang, "Không có thiết bị nào báo lỗi cài đặt bản cập nhật.", "No device reported a failed update."))
    add_table(b, num, _v(lang, "Tình trạng khai báo cấu hình theo báo cáo của thiết bị", "Declaration health as the iPads report it"),
              t.get("declaration_health"), lang,
              _v(lang, "Chưa có thiết bị nào báo tình trạng khai báo cấu hình.", "No iPad has reported its declarations."))
