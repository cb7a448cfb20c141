"""Which files the gateway accepts, decided by their content (magic bytes), not their name.

The MIME type we serve is the one detected here, never the client's Content-Type, and the
file name's extension must agree with it: a PDF renamed .docx, an HTML page renamed .txt or
a macro-enabled workbook renamed .xlsx are refused. SVG and HTML are never accepted (they
can carry scripts that would run in the gateway's origin).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileType:
    key: str
    mime: str
    extensions: tuple[str, ...]
    inline: bool  # the iPad can show it in the browser; otherwise Content-Disposition: attachment


PDF = FileType("pdf", "application/pdf", (".pdf",), True)
DOCX = FileType("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", (".docx",), False)
XLSX = FileType("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", (".xlsx",), False)
PNG = FileType("png", "image/png", (".png",), True)
JPEG = FileType("jpeg", "image/jpeg", (".jpg", ".jpeg"), True)
TEXT = FileType("text", "text/plain; charset=utf-8", (".txt",), True)
ALLOWED = (PDF, DOCX, XLSX, PNG, JPEG, TEXT)


class Rejected(Exception):
    """The upload is not an allowed type; the message says why (English, for the API)."""


def _ooxml(path: Path) -> FileType:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        raise Rejected("ZIP container is damaged") from None
    if "[Content_Types].xml" not in names:
        raise Rejected("ZIP file is not an Office Open XML document")
    if any(n.lower().endswith("vbaproject.bin") for n in names):
        raise Rejected("macro-enabled Office documents are not accepted")
    if "word/document.xml" in names:
        return DOCX
    if "xl/workbook.xml" in names:
        return XLSX
    raise Rejected("only Word (.docx) and Excel (.xlsx) Office documents are accepted")


def _text(path: Path) -> FileType:
    data = path.read_bytes()
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("plain text must be UTF-8") from None
    bad = [c for c in decoded[:65536] if ord(c) < 32 and c not in "\t\n\r\f"]
    if bad:
        raise Rejected("plain text contains control characters (binary file?)")
    head = decoded.lstrip("\ufeff \t\r\n")[:64].lower()
    if head.startswith(("<!doctype", "<html", "<svg", "<?xml", "<script")):
        raise Rejected("HTML/XML/SVG content is not accepted as plain text")
    return TEXT


def detect(path: Path, size: int) -> FileType:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return _ooxml(path)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    # Plain text is the only type without a signature: only small files are decoded to check.
    if size <= 8 * 1024 * 1024:
        return _text(path)
    raise Rejected("file type not recognised; allowed: PDF, DOCX, XLSX, PNG, JPEG, UTF-8 text")


def check(path: Path, size: int, filename: str) -> FileType:
    """The detected type, if the file name's extension agrees with it."""
    ftype = detect(path, size)
    ext = Path(filename).suffix.lower()
    if ext not in ftype.extensions:
        raise Rejected(f"file content is {ftype.key} but the name ends in {ext or '(no extension)'!r}")
    return ftype
