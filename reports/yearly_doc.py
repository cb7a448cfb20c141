"""The year-end assessment as a document: the year in short, trends, concrete proposals for next
year's IT-service plan with the figures behind each, signature, appendices."""
from __future__ import annotations

import datetime as dt

import pandas as pd

from . import charts, fmt, i18n
from .document import Document, Numbering, Section, add_figure, add_table, closing, heading, sheets_of
from .i18n import text
from .official import Issuer
from .periods import Month
from .thresholds import Thresholds, describe


def _v(lang, vi, en):
    return vi if lang == "vi" else en


def yearly_document(year_fig, lang: str, thresholds: Thresholds, issuer: Issuer, number: int | None,
                    issued_on: dt.date) -> Document:
    y, t, k = year_fig.year, year_fig.tables, year_fig.kpis
    num = Numbering(lang)
    subject = _v(lang, f"Đánh giá năm {y} và đề xuất tăng cường bảo đảm an toàn thông tin trên thiết bị di động "
                       f"trong kế hoạch dịch vụ công nghệ thông tin năm {y + 1}",
                 f"Assessment of {y} and proposals to strengthen information security on mobile devices in the "
                 f"{y + 1} IT-service plan")
    notice = ""
    if k.get("provisional") and k.get("until"):
        until = fmt.datetime(pd.Timestamp(k["until"]), lang)
        notice = _v(lang, f"Báo cáo tạm tính đến {until} (năm chưa kết thúc); các tháng chưa diễn ra không được tính.",
                    f"Provisional, up to {until}: the year has not ended; months still to come are not counted.")
    head = heading(issuer, lang, number, issued_on, subject, notice)

    rate = k.get("compliance_rate")
    target = fmt.percent(thresholds.compliance_target_pct / 100, lang, 0)
    s1 = Section(_v(lang, "I. KẾT QUẢ THỰC HIỆN TRONG NĂM", "I. RESULTS OF THE YEAR"))
    if rate is None:
        s1.blocks.append(_v(lang, f"Trong năm {y} chưa có thiết bị nào được đánh giá tuân thủ.", f"No device was assessed in {y}."))
    else:
        s1.blocks.append(_v(
            lang,
            f"Trong năm {y}, số thiết bị quản lý cao nhất là {fmt.count(k['fleet_enrolled_max'], lang)}. Tỷ lệ tuân thủ cả năm đạt "
            f"{fmt.percent(rate, lang)} ({'đạt' if rate * 100 >= thresholds.compliance_target_pct else 'chưa đạt'} mục tiêu {target}); "
            f"{fmt.count(k['remediation_episodes'], lang)} lần khắc phục, trung bình {fmt.hours(k['remediation_mean_hours'], lang)}; "
            f"{fmt.count(k['gateway_denied'], lang)} lượt truy cập tài liệu bị từ chối; {fmt.count(k['vpn_cuts'], lang)} lượt ngắt VPN.",
            f"In {y} at most {fmt.count(k['fleet_enrolled_max'], lang)} devices were managed. Yearly compliance was "
            f"{fmt.percent(rate, lang)} ({'meeting' if rate * 100 >= thresholds.compliance_target_pct else 'below'} the {target} target); "
            f"{fmt.count(k['remediation_episodes'], lang)} remediation episodes, mean {fmt.hours(k['remediation_mean_hours'], lang)}; "
            f"{fmt.count(k['gateway_denied'], lang)} document accesses refused; {fmt.count(k['vpn_cuts'], lang)} VPN cuts."))
    rows = [{"indicator": key, "value": k.get(key) * 100 if key == "compliance_rate" and k.get(key) is not None else k.get(key)}
            for key in ("compliance_rate", "remediation_mean_hours", "remediation_p90_hours", "gateway_denied", "cert_renewals",
                        "cert_late_renewals", "vpn_cuts", "patch_latency_mean_days")]
    add_table(s1.blocks, num, _v(lang, "Các chỉ số chính của năm", "Headline figures of the year"), pd.DataFrame(rows), lang, "")

    s2 = Section(_v(lang, "II. XU HƯỚNG TRONG NĂM", "II. TRENDS OVER THE YEAR"))
    tr = t["trends"]
    labels = [fmt.month_label(m, lang, short=True)[:2] if lang == "vi" else fmt.month_label(m, lang, short=True)[:3] for m in tr["month"]]
    rates = tr["compliance_rate"].astype(float) * 100
    add_figure(s2.blocks, num, text("chart_trend", lang), charts.line(labels, rates.tolist(), lang),
               _v(lang, "Không vẽ biểu đồ tuân thủ theo tháng: chưa có thiết bị nào được đánh giá trong năm.",
                  "No monthly compliance chart: no device was assessed in the year."))
    if rates.isna().any() and rates.notna().any():
        s2.blocks.append(_v(lang, "Các tháng chưa có thiết bị được đánh giá (hoặc chưa diễn ra) để trống trên biểu đồ và ghi “–” trong bảng.",
                            "Months with no device assessed (or still to come) are gaps in the chart and “–” in the table."))
    add_figure(s2.blocks, num, text("chart_trend_rem", lang),
               charts.bars(labels, tr["remediation_mean_hours"].astype(float).tolist(), lang),
               _v(lang, "Không vẽ biểu đồ thời gian khắc phục: không có lần khắc phục nào trong năm.",
                  "No remediation chart: no remediation episode in the year."))
    add_figure(s2.blocks, num, text("chart_trend_deny", lang), charts.bars(labels, tr["gateway_denied"].astype(float).tolist(), lang),
               _v(lang, "Không vẽ biểu đồ từ chối truy cập: không có lượt từ chối nào trong năm.",
                  "No denial chart: no access was refused in the year."))
    add_table(s2.blocks, num, _v(lang, "Các chỉ số theo tháng", "Figures by month"), tr, lang, "")

    s3 = Section(_v(lang, "III. ĐỀ XUẤT TĂNG CƯỜNG CHO KẾ HOẠCH DỊCH VỤ CÔNG NGHỆ THÔNG TIN NĂM SAU",
                    "III. PROPOSALS FOR NEXT YEAR'S IT-SERVICE PLAN"))
    if not year_fig.recommendations:
        s3.blocks.append(text("no_recommendations", lang))
    for i, r in enumerate(year_fig.recommendations, 1):
        s3.blocks.append(f"**{i}. {r['text_' + lang]}")
        s3.blocks.append(f"{text('evidence', lang)}: {r['evidence_' + lang]}")
    body = [s1, s2, s3]

    app = [Section(_v(lang, "PHỤ LỤC I. SỐ LIỆU CHI TIẾT", "APPENDIX I. DETAILED FIGURES"))]
    for n, key in enumerate(("year_rules", "year_units", "year_deny"), 1):
        s = Section(f"{n}. {text(key, lang)}", level=2)
        add_table(s.blocks, num, _v(lang, "Số liệu cả năm", "Figures for the year"), t[key], lang, text("no_data", lang))
        app.append(s)
    s = Section(f"4. {_v(lang, 'Thiết bị không nâng cấp được lên iPadOS theo kế hoạch', 'Devices that cannot run the planned iPadOS')}", level=2)
    add_table(s.blocks, num, _v(lang, f"Thiết bị không chạy được iPadOS {thresholds.plan_min_ipados}",
                                f"Devices that cannot run iPadOS {thresholds.plan_min_ipados}"), t["old_devices"], lang,
              _v(lang, "Mọi thiết bị đều chạy được phiên bản iPadOS theo kế hoạch.", "Every device can run the planned iPadOS."))
    app.append(s)
    s = Section(f"5. {_v(lang, 'Chứng thư số định danh thiết bị hết hạn trong năm sau', 'Identity certificates expiring next year')}", level=2)
    add_table(s.blocks, num, _v(lang, "Số chứng thư hết hạn theo tháng", "Certificates expiring per month"), t["cert_due"], lang,
              _v(lang, "Không có chứng thư nào hết hạn trong năm sau.", "No certificate expires next year."))
    app.append(s)
    s = Section(_v(lang, "PHỤ LỤC II. PHƯƠNG PHÁP TÍNH VÀ NGƯỠNG ĐÁNH GIÁ", "APPENDIX II. METHOD AND THRESHOLDS"))
    s.blocks += [p.format(late=thresholds.late_renewal_days) for p in i18n.METHOD[lang]]
    s.blocks += [("bullet", line) for line in describe(thresholds, lang)]
    app.append(s)

    recs = t["recommendations"]
    recs = (pd.DataFrame({"recommendation": recs["text_" + lang], "evidence": recs["evidence_" + lang], "threshold": recs["threshold"]})
            if len(recs) else pd.DataFrame(columns=["recommendation", "evidence", "threshold"]))
    sheets, keys = sheets_of({"trends": tr, "recommendations": recs, "year_rules": t["year_rules"], "year_units": t["year_units"],
                              "year_deny": t["year_deny"], "proposals_data": t["old_devices"], "cert_due": t["cert_due"]}, lang)
    return Document(lang, f"{head.kind} {subject}", head, body, closing(issuer, lang), app, sheets, keys, Month(y, 12).end)
