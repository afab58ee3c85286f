"""Endpoints this daemon hosts: their `nsmd:` specs, and registrations kept fresh.

A hosted endpoint is registered with this daemon's URL and its node's `nodeName` label
(NSM's clientinfo), and re-registered at 2/3 of its expiry period (NSM: sdk
registry/common/refresh), so it stays findable while the daemon lives and expires within
one period after it dies. Specs are stored, so a restarted
daemon re-registers what it hosted before.
"""

from __future__ import annotations

import logging

from nsmd import netns
from nsmd.clock import Clock
from nsmd.errors import DataplaneError, NsmdError
from nsmd.model import NetworkServiceEndpoint, ServiceLabels, from_wire, to_wire
from nsmd.model.endpoint_spec import EndpointSpec
from nsmd.registry import RegistryView
from nsmd.state import StateDB
from nsmd.timers import TimerSet

REREGISTER_AT = 2 / 3
RETRY_S = 1.0
log = logging.getLogger("nsmd.hosting")


NODE_LABEL = "nodeName"  # NSM's clientinfo label: which node a client or endpoint is on


def with_node_label(nse: NetworkServiceEndpoint, node: str) -> NetworkServiceEndpoint:
    """`nse` labelled with the node hosting it for each of its services (NSM's clientinfo),
    unless the manifest says otherwise, so `{{.nodeName}}` selectors find it."""
    for service in nse.network_service_names:
        entry = nse.network_service_labels.setdefault(service, ServiceLabels())
        entry.labels.setdefault(NODE_LABEL, node)
    return nse


class Hosting:
    def __init__(self, db: StateDB, registry: RegistryView, clock: Clock, url: str,
                 node: str = ""):
        self.db = db
        self.registry = registry
        self.clock = clock
        self.url = url
        self.node = node
        self._hosted: dict[str, tuple[NetworkServiceEndpoint, EndpointSpec]] = {}
        self.timers = TimerSet(clock, self._refresh)

    def spec(self, name: str) -> EndpointSpec | None:
        hosted = self._hosted.get(name)
        return hosted[1] if hosted else None

    def require(self, name: str) -> EndpointSpec:
        """The spec of an endpoint the request was routed to here; it must be ours."""
        spec = self.spec(name)
        if spec is None:
            raise DataplaneError(f"endpoint {name!r} is not hosted by this daemon")
        return spec

    def names(self) -> list[str]:
        return list(self._hosted)

    async def start(self) -> None:
        """Re-registers every endpoint hosted before a restart."""
        for name, doc in self.db.items("hosted"):
            nse = from_wire(NetworkServiceEndpoint, doc["endpoint"])
            nse.url = self.url  # the daemon may serve on another socket than before
            spec = from_wire(EndpointSpec, doc["spec"])
            self._hosted[name] = (nse, spec)
            if netns.exists(spec.netns):
                await self._register(name)

    async def apply(self, nse: NetworkServiceEndpoint, spec: EndpointSpec,
                    ) -> NetworkServiceEndpoint:
        nse.url = self.url
        template = from_wire(NetworkServiceEndpoint, to_wire(nse))
        template.expiration_time = 0.0
        if self.node:
            with_node_label(template, self.node)
        self.db.put("hosted", nse.name, {"endpoint": to_wire(template), "spec": to_wire(spec)})
        self._hosted[nse.name] = (template, spec)
        if not netns.exists(spec.netns):
            log.warning("endpoint %s: namespace %r does not exist yet; it is registered once "
                        "the namespace appears", nse.name, spec.netns)
            return template
        return await self._register(nse.name)

    def remove(self, name: str) -> bool:
        self.timers.disarm(name)
        if self._hosted.pop(name, None) is None:
            return False
        self.db.delete("hosted", name)
        return True

    def reregister_all(self) -> None:
        """Registers every hosted endpoint again now (the registry came back empty-handed
        after a break: NSM's registry heal)."""
        for name, (_, spec) in self._hosted.items():
            if netns.exists(spec.netns):
                self.timers.arm(name, self.clock.time())

    async def check_namespaces(self) -> None:
        """Withdraws endpoints whose namespace vanished; brings them back when it returns.

        A registration that points at a dead workload would only make clients fail over.
        """
        for name, (_, spec) in list(self._hosted.items()):
            alive = netns.exists(spec.netns)
            registered = name in self.registry.endpoints
            if registered and not alive:
                log.info("endpoint %s: namespace %r is gone, unregistering", name, spec.netns)
                await self.registry.unregister_endpoint(name)
                self.timers.disarm(name)
            elif alive and not registered:
                log.info("endpoint %s: namespace %r is back, registering", name, spec.netns)
                await self._register(name)

    def close(self) -> None:
        self.timers.stop()

    async def _register(self, name: str) -> NetworkServiceEndpoint:
        template, _ = self._hosted[name]
        nse = from_wire(NetworkServiceEndpoint, to_wire(template))
        now = self.clock.time()
        registered = await self.registry.register_endpoint(nse)
        when = now + (registered.expiration_time - now) * REREGISTER_AT
        self.timers.arm(name, when)
        return registered

    async def _refresh(self, name: str) -> None:
        if name not in self._hosted:
            return
        try:
            await self._register(name)
        except NsmdError as err:  # keep trying: a registration that lapses loses clients
            log.error("re-registering endpoint %s failed: %s; retrying in 1 s", name, err)
            self.timers.arm(name, self.clock.time() + RETRY_S)
