"""The production gunicorn settings (deploy/gunicorn.conf.py) plus per-request CPU accounting for
benches: the CPU the serving thread spends from gunicorn's pre_request to post_request (the app,
the database driver, writing the response), one line per request in BENCH_CPU_DIR/<pid>.cpu."""
import os
import threading
import time

_here = os.path.dirname(os.path.abspath(__file__))
exec(open(os.path.join(_here, "..", "deploy", "gunicorn.conf.py")).read())  # noqa: S102 — the real settings

_DIR = os.environ["BENCH_CPU_DIR"]
_local = threading.local()
_lines: list = []
_lock = threading.Lock()


def _flush(pid: int) -> None:
    with _lock:
        if _lines:
            with open(os.path.join(_DIR, f"{pid}.cpu"), "a") as f:
                f.writelines(_lines)
            _lines.clear()


def pre_request(worker, req):
    _local.t0 = time.thread_time()


def post_request(worker, req, environ, resp):
    spent = time.thread_time() - getattr(_local, "t0", time.thread_time())
    with _lock:
        _lines.append(f"{req.path.split('?', 1)[0]} {spent:.7f}\n")
        full = len(_lines) >= 200
    if full:
        _flush(worker.pid)


def worker_exit(server, worker):
    _flush(worker.pid)
