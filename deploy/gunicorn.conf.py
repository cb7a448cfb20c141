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
