"""WSGI entry point for gunicorn: `gunicorn -c deploy/gunicorn.conf.py ipad_mdm.wsgi:app`.

Settings come from the environment (DATABASE_URL, IPAD_MDM_INSTANCE,
IPAD_MDM_BASE_URL, CELERY_BROKER_URL, ...). Each worker process opens the
instance after fork (keys, PKCS#11 sessions and DB pools are per process).
"""
from .app import create_app

app = create_app()

import gc  # noqa: E402

# Everything made so far (modules, the app, its caches) lives as long as the worker: moved out of the
# collector's way, so a collection during a request scans only what requests allocate (the p99).
gc.freeze()
