"""iPad product identifiers (ProductName, e.g. "iPad13,18") as the names people know, and a check
of the model registered at handover against the one the iPad reports."""
from __future__ import annotations

import re

# identifier prefix groups -> (family, English name, Vietnamese name). Apple's published list.
_NAMES: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("iPad7,5", "iPad7,6"): ("ipad", "iPad (6th generation)", "iPad (thế hệ thứ 6)"),
    ("iPad7,11", "iPad7,12"): ("ipad", "iPad (7th generation)", "iPad (thế hệ thứ 7)"),
    ("iPad11,6", "iPad11,7"): ("ipad", "iPad (8th generation)", "iPad (thế hệ thứ 8)"),
    ("iPad12,1", "iPad12,2"): ("ipad", "iPad (9th generation)", "iPad (thế hệ thứ 9)"),
    ("iPad13,18", "iPad13,19"): ("ipad", "iPad (10th generation)", "iPad (thế hệ thứ 10)"),
    ("iPad15,7", "iPad15,8"): ("ipad", "iPad (A16)", "iPad (A16)"),
    ("iPad11,3", "iPad11,4"): ("air", "iPad Air (3rd generation)", "iPad Air (thế hệ thứ 3)"),
    ("iPad13,1", "iPad13,2"): ("air", "iPad Air (4th generation)", "iPad Air (thế hệ thứ 4)"),
    ("iPad13,16", "iPad13,17"): ("air", "iPad Air (5th generation)", "iPad Air (thế hệ thứ 5)"),
    ("iPad14,8", "iPad14,9"): ("air", "iPad Air 11-inch (M2)", "iPad Air 11 inch (M2)"),
    ("iPad14,10", "iPad14,11"): ("air", "iPad Air 13-inch (M2)", "iPad Air 13 inch (M2)"),
    ("iPad15,3", "iPad15,4"): ("air", "iPad Air 11-inch (M3)", "iPad Air 11 inch (M3)"),
    ("iPad15,5", "iPad15,6"): ("air", "iPad Air 13-inch (M3)", "iPad Air 13 inch (M3)"),
    ("iPad11,1", "iPad11,2"): ("mini", "iPad mini (5th generation)", "iPad mini (thế hệ thứ 5)"),
    ("iPad14,1", "iPad14,2"): ("mini", "iPad mini (6th generation)", "iPad mini (thế hệ thứ 6)"),
    ("iPad16,1", "iPad16,2"): ("mini", "iPad mini (A17 Pro)", "iPad mini (A17 Pro)"),
    ("iPad8,1", "iPad8,2", "iPad8,3", "iPad8,4"): ("pro", "iPad Pro 11-inch (1st generation)",
                                                   "iPad Pro 11 inch (thế hệ thứ 1)"),
    ("iPad8,5", "iPad8,6", "iPad8,7", "iPad8,8"): ("pro", "iPad Pro 12.9-inch (3rd generation)",
                                                   "iPad Pro 12,9 inch (thế hệ thứ 3)"),
    ("iPad8,9", "iPad8,10"): ("pro", "iPad Pro 11-inch (2nd generation)", "iPad Pro 11 inch (thế hệ thứ 2)"),
    ("iPad8,11", "iPad8,12"): ("pro", "iPad Pro 12.9-inch (4th generation)", "iPad Pro 12,9 inch (thế hệ thứ 4)"),
    ("iPad13,4", "iPad13,5", "iPad13,6", "iPad13,7"): ("pro", "iPad Pro 11-inch (3rd generation)",
                                                       "iPad Pro 11 inch (thế hệ thứ 3)"),
    ("iPad13,8", "iPad13,9", "iPad13,10", "iPad13,11"): ("pro", "iPad Pro 12.9-inch (5th generation)",
                                                         "iPad Pro 12,9 inch (thế hệ thứ 5)"),
    ("iPad14,3", "iPad14,4"): ("pro", "iPad Pro 11-inch (4th generation)", "iPad Pro 11 inch (thế hệ thứ 4)"),
    ("iPad14,5", "iPad14,6"): ("pro", "iPad Pro 12.9-inch (6th generation)", "iPad Pro 12,9 inch (thế hệ thứ 6)"),
    ("iPad16,3", "iPad16,4"): ("pro", "iPad Pro 11-inch (M4)", "iPad Pro 11 inch (M4)"),
    ("iPad16,5", "iPad16,6"): ("pro", "iPad Pro 13-inch (M4)", "iPad Pro 13 inch (M4)"),
}
_BY_ID = {ident: entry for idents, entry in _NAMES.items() for ident in idents}


def marketing_name(product: str | None, lang: str = "vi") -> str | None:
    """"iPad13,18" -> "iPad (thế hệ thứ 10)"; None for an identifier not in the list."""
    entry = _BY_ID.get((product or "").strip())
    if entry is None:
        return None
    return entry[2] if lang == "vi" else entry[1]


def family_of_text(text: str | None) -> str | None:
    """The family a person wrote at registration ("iPad Air 13 inch" -> "air"), None if unclear."""
    t = (text or "").lower()
    if "ipad" not in t:
        return None
    for family in ("pro", "air", "mini"):
        if re.search(rf"\b{family}\b", t):
            return family
    return "ipad"


def model_mismatch(registered: str | None, product: str | None) -> bool:
    """True when the model registered at handover is another family than the one the iPad reports
    (an iPad Pro registered, an iPad Air enrolled): the wrong iPad may have been handed over."""
    entry = _BY_ID.get((product or "").strip())
    written = family_of_text(registered)
    return entry is not None and written is not None and entry[0] != written
