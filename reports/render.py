"""Outputs of one document model: HTML and PDF (the same content, laid out as an administrative
report under Decree 30/2020/NĐ-CP), the tables as XLSX (one sheet per table) and CSV (a zip).

Determinism: charts carry no timestamp metadata, the PDF is written in reportlab's invariant
mode, XLSX properties and ZIP entry times are pinned to the period, and every table arrives
already sorted — so the same data gives byte-identical files.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import math
import zipfile

from .document import Document
from .html_out import to_html
from .pdf_out import to_pdf
from .periods import LOCAL_TZ

__all__ = ["RENDERERS", "EXTENSIONS", "MIME", "to_html", "to_pdf", "to_xlsx", "to_csv_zip"]


# ------------------------------------------------------------------ XLSX / CSV
def _cell_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def to_xlsx(doc: Document) -> bytes:
    """Write-only mode: rows stream to the file instead of living as cell objects (10,000-row
    sheets at a third of the time and memory)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)
    pinned = doc.pinned_time.astimezone(LOCAL_TZ).replace(tzinfo=None)
    wb.properties.created = wb.properties.modified = pinned
    wb.properties.creator = "ipad-mdm"
    wb.properties.title = doc.title
    bold = Font(bold=True)
    for name, df in doc.sheets.items():
        ws = wb.create_sheet(name)
        for i, col in enumerate(df.columns, 1):  # widths must precede the rows in write-only mode
            longest = max([len(str(col))] + [len(str(v)) for v in df.iloc[:200, i - 1]])
            ws.column_dimensions[get_column_letter(i)].width = min(max(10, longest + 2), 60)
        ws.freeze_panes = "A2"
        header = []
        for col in df.columns:
            cell = WriteOnlyCell(ws, value=str(col))
            cell.font = bold
            header.append(cell)
        ws.append(header)
        for row in df.itertuples(index=False):
            ws.append([_cell_value(v) for v in row])
    buf = io.BytesIO()
    wb.save(buf)
    return _pin_zip(buf.getvalue(), pinned)


def _pin_zip(data: bytes, when: dt.datetime) -> bytes:
    """Rewrite a ZIP with fixed entry times and a fixed dcterms:modified (openpyxl stamps the
    wall clock on both at save time), so the same data gives a byte-identical workbook."""
    import re

    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"(<dcterms:(?:modified|created)[^>]*>)[^<]*(</dcterms:)", rb"\g<1>" + stamp + rb"\g<2>", body)
            fixed = zipfile.ZipInfo(info.filename, date_time=when.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(fixed, body)
    return out.getvalue()


def to_csv_zip(doc: Document) -> bytes:
    when = doc.pinned_time.astimezone(LOCAL_TZ).timetuple()[:6]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for i, (name, df) in enumerate(doc.sheets.items(), 1):
            sio = io.StringIO()
            w = csv.writer(sio, lineterminator="\r\n")
            w.writerow([str(c) for c in df.columns])
            for row in df.itertuples(index=False):
                w.writerow(["" if _cell_value(v) is None else _cell_value(v) for v in row])
            info = zipfile.ZipInfo(f"{i:02d}_{doc.sheet_keys[name]}.csv", date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            # BOM: Excel opens UTF-8 CSV with Vietnamese diacritics correctly only with it.
            z.writestr(info, "\ufeff" + sio.getvalue())
    return out.getvalue()


RENDERERS = {"html": to_html, "pdf": to_pdf, "xlsx": to_xlsx, "csv": to_csv_zip}
EXTENSIONS = {"html": "html", "pdf": "pdf", "xlsx": "xlsx", "csv": "csv.zip"}
MIME = {"html": "text/html; charset=utf-8", "pdf": "application/pdf",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "csv": "application/zip"}
