"""netsvcmonitor: moves clients off endpoints a network service's matches no longer allow
(NSM: common/netsvcmonitor).

Every daemon watches the services of its registry view (its own registry, or its mirror
of the remote one, so a change made on any daemon is seen on all of them). For each
change, every connection whose endpoint this daemon selected (for its own clients, and
for its passthrough endpoints' onward requests) is checked as NSM does: the endpoint,
alone, must still be a candidate of the new matches for the connection's labels. One
that is not is closed here; its client heals by reselecting (heal.py). A connection whose
endpoint is not registered is left alone (liveness and expiry deal with it), as is every
connection when its service is deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from nsmd.manager.begin import Begin
from nsmd.model import NetworkService
from nsmd.registry import RegistryView
from nsmd.registry.watch import Overflowed
from nsmd.selection import candidates

log = logging.getLogger("nsmd.manager.netsvcmonitor")


class ServiceMonitor:
    def __init__(self, registry: RegistryView, begin: Begin, outer: Mapping[str, str]):
        self.registry = registry
        self.begin = begin
        self.outer = outer   # a passthrough's onward connection id -> its own connection id

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            watch = self.registry.watch_services()
            stop = asyncio.ensure_future(stopping.wait())
            try:
                while True:
                    event = asyncio.ensure_future(anext(watch))
                    await asyncio.wait((event, stop), return_when=asyncio.FIRST_COMPLETED)
                    if not event.done():
                        event.cancel()
                        return
                    item = event.result()
                    if not item.deleted:
                        await self.check(item.item)
            except Overflowed:
                log.warning("fell behind the registry's service changes; checking them all")
            finally:
                stop.cancel()
                watch.close()

    async def check(self, ns: NetworkService) -> list[str]:
        """Closes the connections `ns` no longer allows; returns the ids closed."""
        doomed: dict[str, str] = {}
        for conn in self.begin.each():
            if conn.network_service != ns.name or self.begin.owner(conn.id) != "":
                continue  # not ours to select: the peer that asked for it selects
            nse = self.registry.endpoints.get(conn.network_service_endpoint_name)
            if nse is None or candidates(ns, [nse], conn.labels):
                continue
            doomed[self.outer.get(conn.id, conn.id)] = nse.name
        for conn_id, endpoint in doomed.items():
            log.info("network service %s changed: endpoint %s no longer matches connection "
                     "%s; closing it so its client reselects", ns.name, endpoint, conn_id)
            await self.begin.close_by_id(conn_id)
        return list(doomed)
