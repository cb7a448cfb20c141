"""Periodic USB token work: warn 30, 14 and 7 days before a signing certificate expires, and once expired."""
from __future__ import annotations

import logging

from ipad_mdm.jobs import periodic

from . import service

log = logging.getLogger(__name__)


@periodic("usb_tokens.warn_expiring", 6 * 3600)
def warn_job(rt) -> None:
    with rt.instance.database.session(dispatcher=rt.dispatcher) as s:
        warned = service.warn_expiring(s)
    if warned:
        log.warning("USB token certificates expiring: %s", ", ".join(warned))
