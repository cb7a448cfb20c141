"""The one way work leaves a request or a job: `dispatcher.submit(task_name, *args)`.

Anything that talks to the outside (APNs pushes, the VPN gateway, report generation) is a
background task (ipad_mdm.jobs.background_task) submitted after the transaction that made it
necessary has committed. With a broker (production) the dispatcher hands it to Celery; on
the embedded default a small thread pool in the process runs it. Either way the work is also
recorded in the database by its owner, so a lost submission is redone by a periodic job.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from .db import after_commit, transaction_state
from .jobs import task

log = logging.getLogger("ipad_mdm.dispatch")

PUSH_TASK = "mdm.send_pushes"
# One broker message carries every task one committed transaction asked for (CeleryDispatcher.batched).
BATCH_TASK = "ipad_mdm.run_batch"


class BackgroundDispatcher:
    """Embedded default: registered background tasks run on a few daemon threads."""

    def __init__(self, runtime: Callable[[], object], workers: int = 4):
        self._runtime = runtime
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ipad-mdm-task")
        self._idle = threading.Condition()
        self._pending = 0

    def submit(self, name: str, *args) -> bool:
        background = task(name)  # unknown names fail here, in the caller, not in a thread
        with self._idle:
            self._pending += 1
        self._pool.submit(self._run, background, args)
        return True

    def request_push(self, device_ids: Iterable[int]) -> bool:
        ids = sorted({int(i) for i in device_ids})
        if ids:
            self.submit(PUSH_TASK, ids)
        return True

    def submit_soon(self, name: str, within: float) -> bool:
        # Embedded: one small office, one process, and tests that wait for the work: run it now.
        return self.submit(name)

    def _run(self, background, args) -> None:
        try:
            background.run(self._runtime(), *args)
        except Exception:
            log.exception("background task %s failed", background.name)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Tests and shutdown: wait until every submitted task has run."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self.wait_idle(timeout=30)
        runtime = self._runtime()
        if runtime is not None:
            runtime.close()


# How long a request may wait on an unreachable broker before the work is deferred: two quick tries.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3}


class CeleryDispatcher:
    """Production: tasks go to the Celery workers through the broker.

    A broker that cannot be reached is a designed state, not an error of the caller's request:
    the work is already recorded in the database by its owner (a device's push_pending, an
    outbox row, a queued command), so submit says "deferred" (returns False, one warning line,
    no traceback) and the periodic sweeps send it once the broker is back."""

    def __init__(self, celery_app, queue: str | None = None):
        self._app = celery_app
        self._queue = queue
        self.unavailable_since: float | None = None
        self._batch = threading.local()
        self._soon: dict[str, float] = {}
        self._soon_lock = threading.Lock()

    def warm(self) -> None:
        """Load the broker's transport (kombu imports it, and the redis client, at the first message:
        a tenth of a second of CPU) when a server process starts, not in the request of its first
        enrollment. Nothing connects here."""
        try:
            self._app.connection_for_write().transport
        except Exception:  # a broker URL kombu cannot resolve: the first send says so, as before
            log.warning("task queue transport could not be loaded", exc_info=True)

    @contextlib.contextmanager
    def batched(self, session):
        """Collect what is submitted inside (a transaction's after-commit callbacks) and send it as
        one message: an enrollment's commit asks for a push, the webhook outbox, the gateways'
        peer changes and the VPN config; four publishes cost the request more than the work they
        announce. The worker runs the entries side by side, as it ran separate messages (ipad_mdm.tasks)."""
        if getattr(self._batch, "entries", None) is not None:
            yield  # already collecting (a callback that commits again): the outer batch sends
            return
        entries: list[tuple[str, tuple]] = []
        self._batch.entries = entries
        try:
            yield
        finally:
            self._batch.entries = None
            if len(entries) == 1:
                sent = self._send(entries[0][0], list(entries[0][1]))
            elif entries:
                sent = self._send(BATCH_TASK, [[[name, list(args)] for name, args in entries]])
            else:
                sent = True
            if not sent and any(name == PUSH_TASK for name, _ in entries):
                session.info["push_deferred"] = True  # what the API and console tell their user

    def submit(self, name: str, *args) -> bool:
        entries = getattr(self._batch, "entries", None)
        if entries is not None:
            entries.append((name, args))
            return True  # an unreachable queue is reported by batched(), for the whole message
        return self._send(name, list(args))

    def submit_soon(self, name: str, within: float) -> bool:
        """Run the task `name` (no arguments, one that takes all the work there is) within `within`
        seconds. What this process asks for again in the first half of that time shares the run, sent
        once with a countdown: a rollout's TokenUpdates make one provisioning pass per second and
        process, not one per iPad (a one-iPad pass costs twice what each iPad of a batch does).
        Why half: the run starts at a wall-clock time the worker judges by its own clock, which
        may run ahead of ours; work recorded before the half is committed well before the run."""
        now = time.monotonic()
        with self._soon_lock:
            if self._soon.get(name, 0.0) > now:
                return True
            self._soon[name] = now + within / 2
        sent = self._send(name, [], countdown=within)
        if not sent:
            with self._soon_lock:
                self._soon.pop(name, None)  # the next request tries the queue again
        return sent

    def _send(self, name: str, args: list, countdown: float | None = None) -> bool:
        from kombu.exceptions import OperationalError

        options = {"queue": self._queue} if self._queue else {}
        if countdown:
            options["countdown"] = countdown
        try:
            self._app.send_task(name, args=args, retry=True, retry_policy=_PUBLISH_RETRY, **options)
        except (OperationalError, ConnectionError, OSError) as exc:
            if self.unavailable_since is None:
                self.unavailable_since = time.monotonic()
            log.warning("task queue unavailable (%s): %s deferred; the periodic sweep sends it when the queue "
                        "is back", type(exc).__name__, name)
            return False
        if self.unavailable_since is not None:
            log.info("task queue reachable again")
            self.unavailable_since = None
        return True

    def request_push(self, device_ids: Iterable[int]) -> bool:
        ids = sorted({int(i) for i in device_ids})
        return self.submit(PUSH_TASK, ids) if ids else True


class NoDispatch:
    """For read-only tools (`device show`): nothing leaves the process."""

    def submit(self, name: str, *args) -> bool:
        return True

    def request_push(self, device_ids) -> bool:
        return True

    def submit_soon(self, name: str, within: float) -> bool:
        return True


def push_after_commit(session, device_ids: Iterable[int], dispatcher=None) -> None:
    """Wake these devices once the session commits (one push request per transaction).
    The dispatcher is the one the unit of work put in session.info unless given."""
    dispatcher = dispatcher or session.info.get("dispatcher")
    if dispatcher is None:
        return  # no dispatcher (a script): push_pending stays set and the retry job pushes

    def first_request() -> set[int]:  # once per transaction
        ids: set[int] = set()

        def push():
            # The caller may tell its user (API, console, CLI): push deferred, queue unavailable.
            session.info["push_deferred"] = dispatcher.request_push(sorted(ids)) is False

        after_commit(session, push)
        return ids

    transaction_state(session, "push_ids", first_request).update(int(i) for i in device_ids)
