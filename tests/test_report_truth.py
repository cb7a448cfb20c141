"""Issue #14: the monthly report tells the truth and reads as an official report.

Provisional periods count only what has happened; no data is a gap, not 0; every headline
figure is traceable and three are recomputed here with plain SQL; the register numbers final
reports; the PDF is looked at page by page (small and large fleets) and agrees with the page
a browser prints from the HTML."""
from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from ipad_mdm.db import utcnow
from reports import service
from reports.models import Report
from reports.month import compute_month
from reports.periods import Month
from reports.yearly import compute_year
from tests.test_reports import OCT, L, db  # noqa: F401  (the hand-checked dataset on both databases)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _pdftotext(pdf: bytes, tmp_path, *args) -> str:
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", *args, str(path), "-"], capture_output=True, text=True, check=True).stdout


# ------------------------------------------------------------------ days that have not happened
def test_unfinished_month_counts_only_the_elapsed_part(db):
    as_of = L(10, 12, 15)  # 12 October 15:00 local: 11 days and 15 hours have happened
    with db.engine.connect() as conn:
        f = compute_month(conn, OCT, as_of=as_of)
    daily = f.tables["compliance_daily"]
    assert daily["date"].tolist()[-1] == "2026-10-12" and len(daily) == 12
    elapsed = 11 + 15 / 24
    assert f.kpis["provisional"] is True
    assert f.kpis["device_days"] == pytest.approx(5 * elapsed)  # D1–D4 and D6; D5 enrolls on the 16th
    # D1 and D6 compliant throughout, D2 until 10 Oct 12:00, D3 all but 5 Oct, D4 never.
    assert f.kpis["compliance_rate"] == pytest.approx((elapsed * 2 + 9.5 + (elapsed - 1)) / (5 * elapsed))
    assert daily.iloc[-1]["device_days"] == pytest.approx(5 * 15 / 24)
    assert f.tables["gateway_daily"]["date"].tolist()[-1] == "2026-10-12"
    with db.engine.connect() as conn:
        whole = compute_month(conn, OCT)
    assert whole.kpis["provisional"] is False and whole.kpis["device_days"] == pytest.approx(164)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # layout only: the figures are checked on both databases
def test_provisional_report_says_so_on_its_first_page(db, tmp_path):
    out = service.build(db, "monthly", "2026-10", "vi", ["pdf", "html"], as_of=L(10, 12, 15))
    first = _pdftotext(out["pdf"], tmp_path, "-f", "1", "-l", "1")
    assert "tạm tính đến 12/10/2026 15:00" in first
    html = out["html"].decode()
    assert "13/10/2026" not in html and "31/10/2026" not in html  # no day after the cut
    en = service.build(db, "monthly", "2026-10", "en", ["html"], as_of=L(10, 12, 15))["html"].decode()
    assert "Provisional, up to 12 Oct 2026 15:00" in en
    with pytest.raises(service.ReportInputError):
        service.build(db, "monthly", "2026-11", "vi", ["html"], as_of=L(10, 12, 15))  # not begun


def test_yearly_future_months_are_not_counted(db):
    with db.engine.connect() as conn:
        y = compute_year(conn, 2026, as_of=L(11, 20))
    tr = y.tables["trends"].set_index("month")
    assert tr.loc["2026-12"].drop("month", errors="ignore").isna().all()
    assert tr.loc["2026-03"].isna().all()  # before the first enrollment: no data, not 0
    assert tr.loc["2026-11", "compliance_rate"] == pytest.approx(4 * 19 / (5 * 19))  # 1–19 Nov, D4 failing
    assert y.kpis["provisional"] is True


def test_stored_reports_provisional_then_final_with_register_numbers(db, tmp_path):
    inst = SimpleNamespace(database=db, settings=SimpleNamespace(instance_dir=tmp_path, celery_broker_url=None))
    current = str(Month.containing(utcnow()))
    with db.session() as s:
        row, run = service.request_report(s, "monthly", current, "vi", ["html"], "test")
        rid = row.id
    assert run
    done = service.run_report(inst, rid)
    assert done["provisional"] is True and done["number"] is None and done["until"]
    with db.session() as s:  # asked again: a provisional report is regenerated, never reused
        row, run = service.request_report(s, "monthly", current, "vi", ["html"], "test")
    assert run and row.status == "pending"
    numbers = []
    for lang in ("vi", "en"):
        with db.session() as s:
            row, _ = service.request_report(s, "monthly", "2026-10", lang, ["pdf"], "test")
            rid = row.id
        result = service.run_report(inst, rid)
        assert result["provisional"] is False
        numbers.append(result["number"])
    assert numbers[0] == numbers[1] == 1  # one register number for both language versions
    with db.session() as s:
        row, _ = service.request_report(s, "monthly", "2026-09", "vi", ["pdf"], "test")
        rid = row.id
    assert service.run_report(inst, rid)["number"] == 2
    with db.session() as s:
        pdf_path = tmp_path / s.scalar(select(Report).where(Report.id == rid)).files["pdf"]["path"]
    assert "Số: 2/BC-TTTH" in _pdftotext(pdf_path.read_bytes(), tmp_path, "-f", "1", "-l", "1")


# ------------------------------------------------------------------ gaps and empty charts
def test_no_data_is_a_gap_and_an_empty_chart_is_left_out(db):
    with db.engine.connect() as conn:
        march = compute_month(conn, Month(2026, 3))
    assert march.tables["compliance_daily"]["rate"].isna().all() and march.kpis["compliance_rate"] is None
    html = service.build(db, "monthly", "2026-03", "vi", ["html"])["html"].decode()
    assert "Không vẽ biểu đồ tuân thủ theo ngày: chưa có thiết bị nào được đánh giá trong kỳ." in html
    assert "Không có lượt truy cập tài liệu nào trong kỳ." in html
    assert "data:image/png" not in html  # nothing to draw: no chart at all, no empty axes
    assert "0,00 %" not in html and "0.00%" not in html


# ------------------------------------------------------------------ traceability
def test_three_headline_figures_recomputed_with_plain_sql(db):
    from openpyxl import load_workbook

    xlsx = service.build(db, "monthly", "2026-10", "vi", ["xlsx"])["xlsx"]
    ws = load_workbook(io.BytesIO(xlsx))["Nguồn gốc số liệu"]
    rows = list(ws.iter_rows(values_only=True))
    head = rows[0]
    assert {"Chỉ số", "Định nghĩa", "Bảng dữ liệu nguồn", "Số lượng làm căn cứ"} <= set(head)
    sheet = {r[head.index("Chỉ số")]: r for r in rows[1:]}
    value = lambda name: sheet[name][head.index("Giá trị (số)")]  # noqa: E731
    start, end = OCT.start, OCT.end
    with db.engine.connect() as conn:
        denied = conn.execute(text("SELECT count(*) FROM gateway_audit_events WHERE decision = 'deny' "
                                   "AND at >= :s AND at < :e"), {"s": start, "e": end}).scalar()
        enrolled = conn.execute(text("SELECT count(*) FROM devices WHERE enrollment_state IN ('enrolled', 'checked_out') "
                                     "AND enrolled_at < :e AND (checked_out_at IS NULL OR checked_out_at >= :e)"),
                                {"e": end}).scalar()
        cuts = conn.execute(text("SELECT count(*) FROM vpn_events WHERE event = 'cut' AND at >= :s AND at < :e"),
                            {"s": start, "e": end}).scalar()
    assert (denied, enrolled, cuts) == (8, 5, 1)
    assert value("Lượt truy cập tài liệu bị từ chối") == denied
    assert value("Thiết bị đã đăng ký (cuối kỳ)") == enrolled
    assert value("Lượt ngắt VPN") == cuts
    assert sheet["Lượt ngắt VPN"][head.index("Bảng dữ liệu nguồn")] == "vpn_events"


# ------------------------------------------------------------------ reading it
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # layout only: the figures are checked on both databases
def test_first_page_is_the_summary_with_measures_and_risks(db, tmp_path):
    pdf = service.build(db, "monthly", "2026-10", "vi", ["pdf"], number=7)["pdf"]
    first = " ".join(_pdftotext(pdf, tmp_path, "-f", "1", "-l", "1").split())
    for expected in ("VĂN PHÒNG CHÍNH PHỦ", "TRUNG TÂM TIN HỌC", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
                     "Độc lập - Tự do - Hạnh phúc", "Số: 7/BC-TTTH", "BÁO CÁO", "tháng 10 năm 2026",
                     "77,13 %", "giảm 14,34 điểm phần trăm so với tháng 9 năm 2026", "chưa đạt mục tiêu 95 %",
                     "Mật mã mở khoá thiết bị", "Chứng thư số định danh thiết bị", "Ngắt mạng riêng ảo (VPN)",
                     "Ba rủi ro lớn nhất", "Kết quả xử lý các rủi ro nêu trong báo cáo tháng trước"):
        assert expected in first, expected
    assert re.search(r"Hà Nội, ngày \d{2} tháng \d{1,2} năm \d{4}", first)
    layout = _pdftotext(pdf, tmp_path, "-layout", "-f", "2", "-l", "2")
    assert layout.strip().splitlines()[0].strip() == "2"  # page number, top centre, from page 2
    assert not _pdftotext(pdf, tmp_path, "-layout", "-f", "1", "-l", "1").strip().splitlines()[0].strip().isdigit()
    whole = " ".join(_pdftotext(pdf, tmp_path).split())
    for expected in ("III. TỒN TẠI, HẠN CHẾ VÀ NGUYÊN NHÂN", "IV. ĐỀ XUẤT, KIẾN NGHỊ", "Nơi nhận:", "Lưu: VT, TTTH.",
                     "PHỤ LỤC II. NGUỒN GỐC SỐ LIỆU", "Bảng 1.", "Hình 1."):
        assert expected in whole, expected
    for jargon in ("truy vấn", "tường minh", "ân hạn", "an ninh", "compliance_target_pct", "min_os_version", "(allowed)"):
        assert jargon not in whole, jargon
    (tmp_path / "fonts.pdf").write_bytes(pdf)
    fonts = subprocess.run(["pdffonts", str(tmp_path / "fonts.pdf")], capture_output=True, text=True, check=True).stdout
    assert "LiberationSerif" in fonts and "DejaVu" not in fonts


def _browser_pdf(html: bytes, tmp_path) -> bytes:
    page, out = tmp_path / "r.html", tmp_path / "browser.pdf"
    page.write_bytes(html)
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", "--no-pdf-header-footer", f"--print-to-pdf={out}",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    return out.read_bytes()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("lang", ["vi", "en"])
def test_browser_and_pdf_versions_agree(db, tmp_path, lang):
    out = service.build(db, "monthly", "2026-10", lang, ["pdf", "html"], number=3)
    ours = " ".join(_pdftotext(out["pdf"], tmp_path).split())
    browser = " ".join(_pdftotext(_browser_pdf(out["html"], tmp_path), tmp_path).split())
    import html as htmllib

    captions = [htmllib.unescape(c) for c in re.findall(r'<p class="cap">(.*?)</p>|<figcaption>(.*?)</figcaption>',
                                                        out["html"].decode()) for c in c if c]
    assert len(captions) >= 10
    for text_ in (ours, browser):  # every numbered table and figure, in the same order, in both
        positions = [text_.find(c) for c in captions]
        assert -1 not in positions, [c for c, p in zip(captions, positions) if p < 0]
        assert positions == sorted(positions)
    for figure in (("77,13 %", "48,39 %", "Số: 3/BC-TTTH") if lang == "vi" else ("77.13%", "48.39%", "No.: 3/BC-TTTH")):
        assert figure in ours and figure in browser, figure


# ------------------------------------------------------------------ small and large fleets, looked at
@pytest.mark.parametrize("devices,days", [(3, 1), (1000, 30)])
def test_pdf_readable_for_a_tiny_and_a_large_fleet(tmp_path, devices, days):
    from PIL import Image, ImageStat

    from bench.bench_reports import generate
    from ipad_mdm.db import Database

    path = tmp_path / "fleet.sqlite3"
    generate(path, devices, days)
    db = Database(f"sqlite:///{path}")
    as_of = Month(2026, 10).start + dt.timedelta(days=1) if days == 1 else None  # one day in / the whole month
    out = service.build(db, "monthly", "2026-10", "vi", ["pdf", "html"], as_of=as_of)
    db.dispose()
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(out["pdf"])
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert 4 <= len(pages) <= 40
    for page in pages:  # every page carries ink, none is a blank or a black box
        stat = ImageStat.Stat(Image.open(page).convert("L"))
        assert stat.var[0] > 50 and stat.mean[0] > 180, page.name
    first = " ".join(_pdftotext(out["pdf"], tmp_path, "-f", "1", "-l", "1").split())
    assert "Ba rủi ro lớn nhất" in first and "Kết quả đánh giá các biện pháp" in first
    whole = " ".join(_pdftotext(out["pdf"], tmp_path).split())
    if days == 1:
        assert "tạm tính đến 02/10/2026 00:00" in first
    else:
        assert "tạm tính" not in first
        assert "dòng còn lại có trong tệp XLSX" in whole  # long lists are cut in the PDF, whole in the XLSX
    assert "data:image/png" in out["html"].decode()
