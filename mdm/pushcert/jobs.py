"""Daily: warn before the push certificate expires (30, 14, 7 days, and when it has)."""
from __future__ import annotations

from ipad_mdm.jobs import periodic


@periodic("mdm.push_certificate_expiry", 24 * 3600)
def push_certificate_expiry(rt) -> dict:
    from .service import expiry_warning

    with rt.instance.database.session() as s:
        return {"warned": expiry_warning(s, rt.instance)}
