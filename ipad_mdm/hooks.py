"""A tiny in-process event bus so packages react to each other without imports.

mdm emits, for example, "inventory.updated" after a command result is stored;
compliance subscribes and evaluates. Handlers run synchronously inside the
caller's unit of work (same session), so a verdict is stored atomically with
the inventory that produced it.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable

log = logging.getLogger(__name__)

# Event names and their keyword arguments:
#   device.authenticated(session, device)        Authenticate accepted
#   device.enrolled(session, device)             first TokenUpdate
#   device.checked_out(session, device)          CheckOut or retirement
#   inventory.updated(session, device, kind)     kind: DeviceInformation, SecurityInfo, ...
#   command.completed(session, device, command)  Acknowledged / Error / CommandFormatError
#   device.detail(session, device, detail)       contribute keys to the device detail dict
#   device.retired(session, device)              IT staff retired the device (wipe, revoke)
#   identity.issued(session, identity, token)    SCEP issued an identity certificate for an enrollment token
#   verdict.changed(session, device, previous, verdict)
#                                                compliance state transition; `verdict` is the
#                                                new compliance verdict object (state, reasons…)
EVENTS = (
    "device.authenticated", "device.enrolled", "device.checked_out", "inventory.updated",
    "command.completed", "device.detail", "device.retired", "verdict.changed", "identity.issued",
)


class Hooks:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable]] = defaultdict(list)

    def subscribe(self, event: str, handler: Callable) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event}")
        if handler not in self._handlers[event]:
            self._handlers[event].append(handler)

    def emit(self, event: str, **kwargs) -> None:
        """Run every handler; one failing handler is logged and does not stop the others
        (a VPN or report bug must not block a device's MDM session) — unless it broke
        the shared database session, which then has to fail as a whole."""
        session = kwargs.get("session")
        for handler in list(self._handlers.get(event, ())):
            try:
                handler(**kwargs)
            except Exception:
                if session is not None and not session.is_active:
                    raise
                log.exception("handler %s for %s failed", getattr(handler, "__qualname__", handler), event)

    def clear(self) -> None:
        self._handlers.clear()
