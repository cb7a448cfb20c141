"""Periodic VPN work: reconcile the gateway config with the database.

After-commit regeneration covers normal operation; this catches the rest: an
apply that failed (gateway down, wg missing), a process killed between commit
and write, an operator who edited the file by hand, and CRL refreshes.
"""
from ipad_mdm.jobs import periodic

from .serverconf import sync_server_config


@periodic("vpn.reconcile", 300)
def reconcile(rt) -> None:
    sync_server_config(rt.instance)
