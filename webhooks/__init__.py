"""Events out: signed webhooks to the office's document system (and any other receiver).

Public surface
  MANIFEST, register(app, hooks, instance)   /api/v1/webhooks…, hook subscriptions
  signing        sign (server) and verify (receiver: signature, timestamp window, replayed ids)
  service        add_subscriber, fan_out, deliver_due, retry
  models         WebhookSubscriber, WebhookDelivery

Where events come from: the core outbox (ipad_mdm.outbox), written in the transaction of the
change. The packages that own a change without a hook publish there directly (mdm: identity
revoked, Lost Mode; console: handover); the changes announced on hooks (verdict.changed,
devices.enrolled, device.checked_out, device.retired) are published by this package's
subscribers, in the same transaction. Delivery runs after commit through the dispatcher (Celery
in production) and from a periodic job; see service.py.
"""
from __future__ import annotations

from ipad_mdm.manifest import Manifest

from . import signing

__all__ = ["MANIFEST", "register", "signing"]

MANIFEST = Manifest(name="webhooks", register="webhooks:register", models=("webhooks.models",),
                    jobs=("webhooks.jobs",), cli=("webhooks.cli:webhook",))


def register(app, hooks, instance) -> None:
    from . import api, events

    events.subscribe(hooks)
    app.register_blueprint(api.bp)
