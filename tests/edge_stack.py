"""Debian's nginx with the shipped template (deploy/nginx/…) in front of a stand-in document system.

`Upstream` is the office's document system as far as the tests can tell: it records every request
it receives (so a test can prove a refused request never reached it) and answers HEAD with a
classification header for the paths it is told about. `start_nginx` renders the template through
the same code as `ipad-mdm gateway nginx-config` and runs nginx on a random port with its own
prefix (pid, logs, temp files), so two test runs on one machine never meet.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Upstream:
    def __init__(self):
        self.requests: list[dict] = []
        self.labels: dict[str, str] = {}
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self):
                with upstream._lock:
                    upstream.requests.append({"method": self.command, "path": self.path,
                                              "headers": {k.lower(): v for k, v in self.headers.items()}})

            def do_GET(self):
                self._record()
                body = f"document system: {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):
                self._record()
                self.send_response(200)
                label = upstream.labels.get(self.path)
                if label is not None:
                    self.send_header("X-Document-Classification", quote(label))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def seen(self, path_part: str, method: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if path_part in r["path"] and (method is None or r["method"] == method)]

    def documents_served(self) -> list[str]:
        """Paths the document system served to a client (not the classification probes)."""
        with self._lock:
            return [r["path"] for r in self.requests if "x-mdm-classification-probe" not in r["headers"]]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def start_nginx(workdir: Path, server, upstream_url: str, *, proxy_secret: str, plain_location: bool = False,
                workers: int = 1, extra_http: str = "", access_log: bool = True):
    """nginx in front of `upstream_url`, asking `server` (a LiveServer) about every request.
    plain_location adds /plain/ served from the same upstream without auth_request (the bench's
    baseline). Yields the https base URL."""
    from document_gateway.edge_nginx import EdgeSite, render

    inst = server.instance
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "tmp"):
        (workdir / sub).mkdir(exist_ok=True)
        os.chmod(workdir / sub, 0o777)
    port = _free_port()
    site = render(EdgeSite(listen=f"127.0.0.1:{port}", server_name="localhost", tls_cert=str(inst.server_cert_path),
                           tls_key=str(inst.server_key_path), client_ca=str(inst.settings.ca_dir / "ca.pem"),
                           mdm_url=server.url, mdm_tls_name="localhost",
                           mdm_ca=str(inst.settings.ca_dir / "ca.pem"), upstream_url=upstream_url,
                           proxy_secret=proxy_secret, client_cert_header=inst.settings.client_cert_header))
    if plain_location:
        site = site.replace("    location / {", "    location /plain/ {\n        proxy_pass http://ipad_mdm_document_system;\n"
                            "        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n    }\n\n"
                            "    location / {", 1)
    (workdir / "edge.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    tmp = workdir / "tmp"
    (workdir / "nginx.conf").write_text(f"""{user}worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {workdir / "logs" / "access.log" if access_log else "off"};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {workdir}/edge.conf;
{extra_http}
}}
""")
    check = subprocess.run([NGINX, "-t", "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):  # a bound for an nginx that never listens, not a timing check
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("nginx did not listen")
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
