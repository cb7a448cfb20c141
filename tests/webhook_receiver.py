"""A document system's webhook endpoint, as the README tells receivers to write it: raw body,
webhooks.signing.verify (signature, timestamp window, replayed ids), then act. Real HTTP."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from webhooks.signing import Rejected, verify


class Receiver:
    def __init__(self, secret: str, port: int = 0):
        self.secret = secret.encode()
        self.events: list[dict] = []
        self.raw: list[tuple[dict, bytes]] = []   # what arrived, for replay tests
        self.rejected: list[str] = []
        self.fail_with: int | None = None          # answer this status instead of accepting
        self._ids: set[str] = set()
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.handle(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}/hooks/ipad-mdm"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _seen(self, event_id: str) -> bool:
        if event_id in self._ids:
            return True
        self._ids.add(event_id)
        return False

    def handle(self, headers: dict, body: bytes) -> int:
        if self.fail_with is not None:
            return self.fail_with
        lowered = {k.lower(): v for k, v in headers.items()}
        h = type("H", (), {"get": lambda _self, k, d=None: lowered.get(k.lower(), d)})()
        with self._lock:
            try:
                verify(self.secret, h, body, seen=self._seen)
            except Rejected as exc:
                self.rejected.append(exc.reason)
                return 401 if exc.reason != "replayed" else 200  # a replay is acknowledged, not acted on
            self.raw.append((headers, body))
            self.events.append(json.loads(body))
            self._lock.notify_all()
        return 204

    def wait_for(self, predicate, timeout: float = 60) -> list[dict]:
        """A bound for a delivery that never comes, not a timing check."""
        with self._lock:
            self._lock.wait_for(lambda: predicate(self.events), timeout)
            return list(self.events)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
