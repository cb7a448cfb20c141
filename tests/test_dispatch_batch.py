"""One broker message per committed transaction (ipad_mdm.dispatch.CeleryDispatcher.batched), and the
worker's side (ipad_mdm.tasks: run_batch): the entries run side by side, one failing or unknown does
not stop the others. Against the real Redis broker."""
from __future__ import annotations

import base64
import json
import os
import threading
import uuid

import pytest
import redis

from ipad_mdm import tasks as worker
from ipad_mdm.celery_app import make_celery
from ipad_mdm.dispatch import BATCH_TASK, PUSH_TASK, CeleryDispatcher
from ipad_mdm.jobs import _TASKS, background_task
from tests.conftest import REDIS_URL


class _Session:
    info: dict

    def __init__(self):
        self.info = {}


def _queued(client: redis.Redis, queue: str) -> list[dict]:
    key = os.environ.get("IPAD_MDM_REDIS_KEY_PREFIX", "") + queue
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def test_a_transactions_tasks_travel_as_one_message():
    queue = f"ipad-mdm-test-batch-{uuid.uuid4().hex[:8]}"
    app = make_celery(REDIS_URL, None)
    client = redis.Redis.from_url(REDIS_URL)
    dispatcher = CeleryDispatcher(app, queue)
    try:
        session = _Session()
        with dispatcher.batched(session):
            assert dispatcher.request_push([3, 1]) is True
            assert dispatcher.submit("outbox.pump") is True
            assert dispatcher.submit("vpn.gateway.changes", [7], []) is True
            assert _queued(client, queue) == []  # nothing leaves before the batch closes
        messages = _queued(client, queue)
        assert len(messages) == 1 and messages[0]["headers"]["task"] == BATCH_TASK
        args = json.loads(base64.b64decode(messages[0]["body"]))[0]  # Celery protocol 2: [args, kwargs, embed]
        assert args == [[[PUSH_TASK, [[1, 3]]], ["outbox.pump", []], ["vpn.gateway.changes", [[7], []]]]]
        assert not session.info.get("push_deferred")

        # A lone task is sent as itself; outside a batch, submit sends at once.
        with dispatcher.batched(_Session()):
            dispatcher.submit("outbox.pump")
        dispatcher.submit("vpn.sync_config", 1.5)
        assert [m["headers"]["task"] for m in _queued(client, queue)[:2]] == ["vpn.sync_config", "outbox.pump"]
    finally:
        client.delete(os.environ.get("IPAD_MDM_REDIS_KEY_PREFIX", "") + queue)
        app.close()


def test_an_unreachable_queue_defers_the_whole_batch_and_says_so_for_the_push():
    app = make_celery("redis://127.0.0.1:1/0", None)  # nothing listens on port 1
    dispatcher = CeleryDispatcher(app, "ipad-mdm-test-nowhere")
    session = _Session()
    with dispatcher.batched(session):
        dispatcher.request_push([1])
        dispatcher.submit("outbox.pump")
    assert session.info["push_deferred"] is True and dispatcher.unavailable_since is not None
    app.close()


def test_requests_for_a_gathering_task_share_one_delayed_run(monkeypatch):
    """submit_soon: the provisioning pass a rollout's TokenUpdates ask for is sent once per half
    window and process, with a countdown, outside the transaction's batch; a failed send is not
    remembered, so the next request tries the queue again."""
    from ipad_mdm import dispatch

    queue = f"ipad-mdm-test-soon-{uuid.uuid4().hex[:8]}"
    app = make_celery(REDIS_URL, None)
    client = redis.Redis.from_url(REDIS_URL)
    dispatcher = CeleryDispatcher(app, queue)
    clock = [1000.0]
    monkeypatch.setattr(dispatch, "time", type("Clock", (), {"monotonic": staticmethod(lambda: clock[0])}))
    try:
        with dispatcher.batched(_Session()):
            assert dispatcher.submit("outbox.pump") is True
            for _ in range(3):
                assert dispatcher.submit_soon("mdm.provision_enrolled", 2.0) is True
        clock[0] += 0.9  # still inside the first half: shares the run already sent
        assert dispatcher.submit_soon("mdm.provision_enrolled", 2.0) is True
        messages = _queued(client, queue)
        assert [m["headers"]["task"] for m in messages] == ["outbox.pump", "mdm.provision_enrolled"]
        assert messages[1]["headers"]["eta"] is not None and messages[0]["headers"]["eta"] is None
        clock[0] += 0.2  # past the half: a later enrollment may miss that run, so it asks for its own
        dispatcher.submit_soon("mdm.provision_enrolled", 2.0)
        assert [m["headers"]["task"] for m in _queued(client, queue)].count("mdm.provision_enrolled") == 2
    finally:
        client.delete(os.environ.get("IPAD_MDM_REDIS_KEY_PREFIX", "") + queue)
        app.close()

    down = make_celery("redis://127.0.0.1:1/0", None)
    dispatcher = CeleryDispatcher(down, "ipad-mdm-test-nowhere")
    dispatcher.warm()  # a server starting while the broker is down: the transport loads, nothing connects
    assert dispatcher.submit_soon("mdm.provision_enrolled", 2.0) is False
    # Not remembered as sent: the next TokenUpdate tries the queue again (the sweep, if it is still down).
    assert dispatcher.submit_soon("mdm.provision_enrolled", 2.0) is False
    down.close()


@pytest.fixture
def batch_tasks(monkeypatch):
    released, seen = threading.Event(), []

    @background_task("test.batch.wait")
    def wait(rt, label):
        seen.append((label, released.wait(60)))  # sequential entries would wait the full minute, then False

    @background_task("test.batch.fail")
    def fail(rt):
        raise RuntimeError("this entry fails")

    @background_task("test.batch.release")
    def release(rt):
        released.set()
        seen.append(("release", True))

    monkeypatch.setattr(worker.WorkerRuntime, "get", classmethod(lambda cls: "runtime"))
    yield seen
    for name in ("test.batch.wait", "test.batch.fail", "test.batch.release"):
        _TASKS.pop(name, None)


def test_the_worker_runs_a_batchs_entries_side_by_side(batch_tasks, caplog):
    run_batch = worker.app.tasks[BATCH_TASK]
    run_batch.run([["test.batch.wait", ["first"]], ["test.batch.fail", []], ["no.such.task", []],
                   ["test.batch.release", []]])
    assert sorted(batch_tasks) == [("first", True), ("release", True)]
    assert "background task test.batch.fail failed" in caplog.text
    assert "unknown background task no.such.task in a batch" in caplog.text
