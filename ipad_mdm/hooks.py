"""A tiny in-process event bus so packages react to each other without imports.

mdm emits, for example, "inventory.updated" after a command result is stored;
compliance subscribes and evaluates. Handlers run synchronously inside the
caller's unit of work (same session), so a verdict is stored atomically with
the inventory that produced it.

Outcomes are true, never assumed: `emit` returns one outcome per subscriber
({"subscriber", "status": "done" | "failed", "detail", ...whatever the handler returned}).
A non-critical handler runs inside a SAVEPOINT: if it fails, what it wrote is undone, the
failure is logged and reported in its outcome, and the other subscribers still run (a VPN
or report bug must not block a device's MDM session). The subscribers of one event share one
SAVEPOINT until one of them fails; then they run again, one SAVEPOINT each. A critical handler's failure fails
the whole transaction (used where the change must not commit without it, e.g. the gateway's
cache invalidation). `emit_to` re-runs chosen subscribers (retrying a failed action); `emit_many`
emits for many items at once, to the subscribers that take batches in one call.
"""
from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

# Event names and their keyword arguments:
#   device.authenticated(session, device)        Authenticate accepted
#   devices.enrolled(session, devices)           new enrollments (first TokenUpdate), all of one provisioning
#                                                pass after their requests (mdm.provisioning): subscribers
#                                                work set-based; a subscriber that fails for the batch is
#                                                run again one device at a time
#   device.checked_out(session, device)          CheckOut or retirement
#   inventory.updated(session, device, kind, batch_pending)
#                                                kind: DeviceInformation, SecurityInfo, ...;
#                                                batch_pending: more inventory answers of this
#                                                device are still to come
#   command.completed(session, device, command)  Acknowledged / Error / CommandFormatError
#   device.detail(session, device, detail)       contribute keys to the device detail dict
#   device.retired(session, device)              IT staff retired the device (wipe, revoke)
#   identity.issued(session, identity, token)    SCEP issued an identity certificate for an enrollment token
#   verdict.changed(session, device, previous, verdict)
#                                                compliance state transition; `verdict` is the
#                                                new compliance verdict object (state, reasons…)
#   verdict.updated(session, device, verdict)    the verdict changed without a transition
#                                                (a deadline moved because a policy changed, or
#                                                its reasons changed within the same state)
#   access.describe(session, device, out)        contribute the document-access decision to `out`
#   device.expected(session, serial, out)       may an iPad with this serial enroll by ADE? a subscriber
#                                                that knows it sets out["registered"] (and out["unit_code"])
#   ade.devices_synced(session, devices)        Apple Business Manager assigned new iPads to this server
#                                                (devices: [{"serial_number", "model"}])
#   status.reported(session, device, report, changed)
#                                                a declarative status report was stored (mdm.ddm
#                                                StatusReport; `changed`: item names whose value changed)
EVENTS = (
    "device.authenticated", "devices.enrolled", "device.checked_out", "inventory.updated", "status.reported",
    "command.completed", "device.detail", "device.retired", "verdict.changed", "verdict.updated",
    "identity.issued", "access.describe", "device.expected", "ade.devices_synced",
)

# Events whose handlers only read: no SAVEPOINT (on SQLite one would take the write lock).
READ_ONLY_EVENTS = ("device.detail", "access.describe", "device.expected")


@dataclass(frozen=True)
class _Subscriber:
    name: str
    handler: Callable
    critical: bool
    # when(**kwargs) -> False: nothing to do for this event; the handler is not run (and no
    # SAVEPOINT opened: a round trip each way on PostgreSQL, per device in a bulk evaluation).
    when: Callable | None = None
    # batch(session, items) -> one result per item: the handler for many emits at once (emit_many).
    batch: Callable | None = None


class Hooks:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[_Subscriber]] = defaultdict(list)

    def subscribe(self, event: str, handler: Callable, *, name: str | None = None, critical: bool = False,
                  when: Callable | None = None, batch: Callable | None = None) -> None:
        """`batch(session, items)`: does for many emits at once (emit_many: `items` are their keyword
        arguments but the session) what `handler` does for one, and returns one result per item."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event}")
        if any(s.handler is handler for s in self._subscribers[event]):
            return
        name = name or f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', handler)}"
        self._subscribers[event].append(_Subscriber(name, handler, critical, when, batch))

    def subscribers(self, event: str) -> list[str]:
        return [s.name for s in self._subscribers.get(event, ())]

    def emit(self, event: str, **kwargs) -> list[dict]:
        return self._run(event, self._subscribers.get(event, ()), kwargs)

    def emit_to(self, event: str, names, **kwargs) -> list[dict]:
        wanted = set(names)
        return self._run(event, [s for s in self._subscribers.get(event, ()) if s.name in wanted], kwargs)

    def emit_many(self, event: str, items: list[dict], *, session) -> list[list[dict]]:
        """`emit(event, session=session, **item)` for each of `items`, in order: each item's outcomes.

        A subscriber with a batch handler runs once for all the items it applies to, in one SAVEPOINT
        (a compliance pass cutting the VPN of a thousand iPads: a few set-based statements, not a
        SAVEPOINT and ten queries each). If the batch fails, what it wrote is undone and the
        subscriber runs item by item, as emit runs it: the outcomes are what emit would give."""
        subscribers = self._subscribers.get(event, ())
        singles = [sub for sub in subscribers if sub.batch is None]
        out = [self._run(event, singles, {"session": session, **item}) if singles else [] for item in items]
        for sub in subscribers:
            if sub.batch is None:
                continue
            applies = [i for i, item in enumerate(items) if sub.when is None or sub.when(session=session, **item)]
            results: dict[int, dict] = {}
            if applies:
                try:
                    with _isolated(session):
                        done = sub.batch(session=session, items=[items[i] for i in applies])
                    results = {i: _outcome(sub.name, "done", r) for i, r in zip(applies, done, strict=True)}
                except Exception as exc:
                    if sub.critical or not session.is_active:
                        raise
                    log.info("the batch handler %s for %s failed (%s): it runs again item by item",
                             sub.name, event, type(exc).__name__)
                    results = {i: self._run_each(event, [(sub, True)], {"session": session, **items[i]}, session)[0]
                               for i in applies}
            for i, outcomes in enumerate(out):
                outcomes.append(results.get(i) or {"subscriber": sub.name, "status": "not_applicable"})
        return out

    def _run(self, event: str, subscribers, kwargs) -> list[dict]:
        session = kwargs.get("session") if event not in READ_ONLY_EVENTS else None
        # Whether a subscriber applies is decided on the event's arguments, before any handler runs.
        plan = [(sub, sub.when is None or bool(sub.when(**kwargs))) for sub in subscribers]
        if session is None or sum(1 for sub, applies in plan if applies and not sub.critical) < 2:
            return self._run_each(event, plan, kwargs, session)
        # Those that apply in one SAVEPOINT first (a round trip each way on PostgreSQL, per subscriber,
        # was a sixth of an enrollment's statements). If one fails, what they all wrote is undone and
        # they run again, one SAVEPOINT each: the outcome is what one SAVEPOINT each gives.
        # Handlers talk to the outside only through db.after_commit, which forgets what was undone.
        critical_failed = False
        try:
            with _isolated(session):
                outcomes = []
                for sub, applies in plan:
                    if not applies:
                        outcomes.append({"subscriber": sub.name, "status": "not_applicable"})
                        continue
                    critical_failed = sub.critical
                    result = sub.handler(**kwargs)
                    critical_failed = False
                    outcomes.append(_outcome(sub.name, "done", result))
                return outcomes
        except Exception as exc:
            if critical_failed or not session.is_active:
                raise
            log.info("a handler for %s failed (%s): each runs again on its own", event, type(exc).__name__)
        return self._run_each(event, plan, kwargs, session)

    def _run_each(self, event: str, plan, kwargs, session) -> list[dict]:
        outcomes = []
        for sub, applies in plan:
            if not applies:
                outcomes.append({"subscriber": sub.name, "status": "not_applicable"})
                continue
            if sub.critical:
                result = sub.handler(**kwargs)
                outcomes.append(_outcome(sub.name, "done", result))
                continue
            try:
                with _isolated(session):
                    result = sub.handler(**kwargs)
                outcomes.append(_outcome(sub.name, "done", result))
            except Exception as exc:
                if session is not None and not session.is_active:
                    raise  # the shared session itself is broken: the request fails as a whole
                log.exception("handler %s for %s failed", sub.name, event)
                outcomes.append({"subscriber": sub.name, "status": "failed",
                                 "detail": f"{type(exc).__name__}: {exc}"[:300]})
        return outcomes

    def clear(self) -> None:
        self._subscribers.clear()


def _outcome(name: str, status: str, result) -> dict:
    out = {"subscriber": name, "status": status}
    if isinstance(result, dict):
        out.update(result)
    return out


def _isolated(session):
    if session is None:
        return contextlib.nullcontext()
    from .db import savepoint

    return savepoint(session)
