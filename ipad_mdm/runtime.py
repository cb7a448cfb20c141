"""What jobs, tasks and request handlers share in one process: the instance, the event
hooks, the dispatcher, and per-process resources (an APNs connection, …) closed together."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("ipad_mdm.runtime")


@dataclass
class Runtime:
    instance: object          # ipad_mdm.instance.Instance
    hooks: object             # ipad_mdm.hooks.Hooks
    dispatcher: object        # ipad_mdm.dispatch.BackgroundDispatcher | CeleryDispatcher
    resources: dict = field(default_factory=dict)

    def resource(self, name: str, factory):
        """A per-process resource, made on first use (kept until close())."""
        value = self.resources.get(name)
        if value is None:
            value = self.resources[name] = factory()
        return value

    def close(self) -> None:
        for name, value in list(self.resources.items()):
            closer = getattr(value, "close", None)
            if closer is not None:
                try:
                    closer()
                except Exception:
                    log.exception("closing %s failed", name)
        self.resources.clear()
