"""The clock compliance decisions use.

Deadlines are compared against `now()`; tests (and an operator replaying a
period) patch this one function instead of sleeping. Timestamps written by the
mdm package (last_seen_at, inventory *_at) keep using the real clock.
"""
from __future__ import annotations

import datetime as dt

from ipad_mdm.db import utcnow


def now() -> dt.datetime:
    return utcnow()
