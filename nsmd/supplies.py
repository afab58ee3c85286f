"""Scale from zero: the endpoints a supplier endpoint starts on demand, and their retirement
(NSM: sdk-k8s createpod, sdk onidle).

A supplier endpoint (`spec.nsmd.supplier`) serves no vWire itself. For a request routed to
it, this daemon makes sure a supplied endpoint exists (NAME-NODE, in a network namespace
it creates, registered with the supplier's labels plus this node's nodeName, addressed
from the supplier's ipam), and the passthrough element hands the request to it; the
service's other matches find it directly from then on. A supplied endpoint is retired,
unregistered and its namespace deleted, idle_s after its last vWire closed. What was
supplied is written down, so a restarted daemon keeps retiring it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from nsmd import netns
from nsmd.clock import Clock, every
from nsmd.hosting import NODE_LABEL, Hosting
from nsmd.model import Connection, NetworkServiceEndpoint, ServiceLabels
from nsmd.model.endpoint_spec import EndpointSpec, SupplierSpec
from nsmd.state import StateDB

CHECK_INTERVAL_S = 1.0
NETNS_PREFIX = "nsmd-"
log = logging.getLogger("nsmd.supplies")


class Supplies:
    def __init__(self, hosting: Hosting, db: StateDB, clock: Clock, node: str,
                 connections: Callable[[], Iterable[Connection]]):
        self.hosting = hosting
        self.db = db
        self.clock = clock
        self.node = node
        self.connections = connections   # the live connections (read only)
        self._idle_since: dict[str, float] = {}

    def name_for(self, supplier: str) -> str:
        return f"{supplier}-{self.node}"

    async def ensure(self, supplier: str, spec: SupplierSpec, service: str) -> str:
        """The name of the endpoint `supplier` supplies on this node, started if needed."""
        name = self.name_for(supplier)
        if self.hosting.spec(name) is not None:
            return name
        space = NETNS_PREFIX + name
        await netns.create_named(space)
        nse = NetworkServiceEndpoint(
            name=name, network_service_names=[service],
            network_service_labels={service: ServiceLabels(
                labels={**spec.labels, NODE_LABEL: self.node})})
        self.db.put("supplied", name, {"supplier": supplier, "netns": space,
                                       "idle_s": spec.idle_s})
        try:
            await self.hosting.apply(nse, EndpointSpec(netns=space, ipam=spec.ipam))
        except BaseException:
            await self.retire(name)
            raise
        log.info("supplier %s started endpoint %s in namespace %s", supplier, name, space)
        return name

    async def retire(self, name: str) -> None:
        doc = dict(self.db.items("supplied")).get(name)
        self.hosting.remove(name)
        if name in self.hosting.registry.endpoints:
            await self.hosting.registry.unregister_endpoint(name)
        if doc is not None:
            await netns.remove_named(doc["netns"])
            self.db.delete("supplied", name)
        self._idle_since.pop(name, None)
        log.info("supplied endpoint %s retired (idle)", name)

    async def check_once(self) -> list[str]:
        """Retires every supplied endpoint idle for its idle_s; returns their names."""
        now = self.clock.time()
        in_use = {s.name for c in self.connections() for s in c.path.path_segments}
        retired = []
        for name, doc in list(self.db.items("supplied")):
            if name in in_use:
                self._idle_since.pop(name, None)
                continue
            since = self._idle_since.setdefault(name, now)
            if now - since >= doc["idle_s"]:
                await self.retire(name)
                retired.append(name)
        return retired

    async def run(self, stopping: asyncio.Event) -> None:
        async for _ in every(self.clock, CHECK_INTERVAL_S, stopping):
            try:
                await self.check_once()
            except Exception:  # keep retiring the others next time
                log.exception("retiring idle supplied endpoints failed")
