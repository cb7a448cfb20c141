"""gunicorn settings for production (behind a TLS-terminating proxy, or TLS here).

Environment:
  IPAD_MDM_BIND        address (default 127.0.0.1:8000)
  IPAD_MDM_WORKERS     worker processes (default 2 x cores + 1)
  IPAD_MDM_TLS_CERT / IPAD_MDM_TLS_KEY   terminate TLS in gunicorn (else plain HTTP behind the proxy)
"""
import multiprocessing
import os

bind = os.environ.get("IPAD_MDM_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("IPAD_MDM_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = int(os.environ.get("IPAD_MDM_THREADS", "4"))
# The app is created in each worker (not preloaded): PKCS#11 sessions and DB pools must not cross fork.
preload_app = False
timeout = 60
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then (leaks in third-party code), but rarely: a new worker imports and
# builds the app (about a second of CPU) and starts with cold caches. At 5,000 a busy edge endpoint
# restarted a worker every few seconds: a fifth of the workers' CPU, and the slowest 1 % of decisions.
max_requests = 100000
max_requests_jitter = 10000
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"  # query strings with secrets (the enrollment token) are redacted: ipad_mdm.logs
# The same access lines, built from the atoms the format names only (ipad_mdm.gunicorn_logging).
logger_class = "ipad_mdm.gunicorn_logging.AccessLogger"
# Files the workers create (reports, documents, VPN config) are the server user's alone.
umask = 0o077
errorlog = "-"
forwarded_allow_ips = os.environ.get("IPAD_MDM_FORWARDED_ALLOW_IPS", "127.0.0.1")
if os.environ.get("IPAD_MDM_TLS_CERT"):
    certfile = os.environ["IPAD_MDM_TLS_CERT"]
    keyfile = os.environ["IPAD_MDM_TLS_KEY"]

    # gunicorn builds a new SSLContext for every connection (loading the system CA store, the chain
    # and the key: about 1 ms of CPU, as much as a third of the handshake). One context per worker,
    # rebuilt when the certificate or key file changes (a renewed certificate needs no restart).
    _tls_cached = {}

    def ssl_context(conf, default_ssl_context_factory):
        stamp = tuple(os.stat(path).st_mtime_ns for path in (conf.certfile, conf.keyfile))
        cached = _tls_cached.get("context")
        if cached is None or cached[0] != stamp:
            cached = _tls_cached["context"] = (stamp, default_ssl_context_factory())
        return cached[1]
