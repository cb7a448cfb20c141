"""The serif font of the office's documents (reports, handover minutes): Liberation Serif, metric-
compatible with Times New Roman, which Decree 30/2020/NĐ-CP documents use, and with every Vietnamese
diacritic. Registered once per process with reportlab; a font without Vietnamese glyphs is refused."""
from __future__ import annotations

import os
from pathlib import Path

FONT_DIR = Path(os.environ.get("IPAD_MDM_REPORT_FONT_DIR", "/usr/share/fonts/truetype/liberation2"))
VIETNAMESE = "ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹđĐƠƯ"
SERIF = "LiberationSerif"
_FONTS: dict = {}


def register_serif() -> None:
    """Liberation Serif has every Vietnamese diacritic; reportlab's built-in Times has none, so the
    PDF refuses to fall back silently."""
    if _FONTS:
        return
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    files = {"": "Regular", "-Bold": "Bold", "-Italic": "Italic", "-BoldItalic": "BoldItalic"}
    for suffix, style in files.items():
        path = FONT_DIR / f"LiberationSerif-{style}.ttf"
        if not path.exists():
            raise RuntimeError(f"font {path} not found: install Debian package fonts-liberation2 "
                               "or set IPAD_MDM_REPORT_FONT_DIR to a folder holding LiberationSerif-*.ttf")
        font = TTFont(SERIF + suffix, str(path))
        lacking = [c for c in VIETNAMESE if ord(c) not in font.face.charToGlyph]
        if lacking:  # Liberation 1.x (fonts-liberation) has no Vietnamese: it would print empty boxes
            raise RuntimeError(f"font {path} has no glyph for {''.join(lacking[:5])}…: install fonts-liberation2")
        pdfmetrics.registerFont(font)
    addMapping(SERIF, 0, 0, SERIF)
    addMapping(SERIF, 1, 0, SERIF + "-Bold")
    addMapping(SERIF, 0, 1, SERIF + "-Italic")
    addMapping(SERIF, 1, 1, SERIF + "-BoldItalic")
    _FONTS["ok"] = True


_register_fonts = register_serif
