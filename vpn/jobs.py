"""Periodic VPN work.

- reconcile: the gateway config against the database. After-commit regeneration covers normal
  operation; this catches the rest: an apply that failed (gateway down, wg missing), a process
  killed between commit and write, an operator who edited the file by hand, and CRL refreshes.
- tunnels: read what the gateways saw (`wg show <iface> dump` where this host drives the interface;
  each OpenVPN provider's status file) into tunnel sightings.
- campaigns: move every running migration campaign one pass forward.
"""
import logging

from ipad_mdm.jobs import periodic

from .serverconf import sync_server_config

log = logging.getLogger(__name__)


@periodic("vpn.reconcile", 300)
def reconcile(rt) -> None:
    sync_server_config(rt.instance)


@periodic("vpn.tunnels", 60)
def tunnels(rt) -> dict:
    from .sightings import read_all

    with rt.instance.database.session(dispatcher=rt.dispatcher) as s:
        return read_all(s, rt.instance)


@periodic("vpn.campaigns", 60)
def campaigns(rt) -> dict:
    from . import campaigns as engine

    out = {}
    with rt.instance.database.session(dispatcher=rt.dispatcher) as s:
        for campaign in engine.running(s):
            out[campaign.id] = engine.advance(s, rt.instance, campaign)
    return out
