"""Register / Find (with watch) / Unregister for services and endpoints, with NSE expiry.

Lookups are served from memory (indexed by name and by service); every change is written
through to the state database first, so a restarted daemon finds what it had. Endpoint
records expire at `expiration_time` unless re-registered (NSM: sdk pkg/registry/common/expire).
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict

from nsmd.clock import Clock, Timer
from nsmd.errors import NotFound, ValidationError
from nsmd.model import NetworkService, NetworkServiceEndpoint, from_wire, to_wire
from nsmd.registry.query import EndpointQuery, ServiceQuery
from nsmd.registry.watch import Watch, Watchers
from nsmd.state import StateDB

DEFAULT_NSE_EXPIRY_S = 60.0  # NSM's defaultExpiration
ANY_SERVICE = ServiceQuery()
ANY_ENDPOINT = EndpointQuery()
log = logging.getLogger("nsmd.registry")


class Registry:
    """The local registry. Writes are coroutines so that a remote registry (another
    daemon's, over mTLS) can stand in for it behind the same interface."""

    def __init__(self, db: StateDB, clock: Clock, nse_expiry_s: float = DEFAULT_NSE_EXPIRY_S):
        self.db = db
        self.clock = clock
        self.nse_expiry_s = nse_expiry_s
        self.services: dict[str, NetworkService] = {}
        self.endpoints: dict[str, NetworkServiceEndpoint] = {}
        self._by_service: dict[str, set[str]] = defaultdict(set)
        self._expiry_heap: list[tuple[float, str]] = []
        self._expiry_timer: Timer | None = None
        self.service_watchers = Watchers()
        self.endpoint_watchers = Watchers()
        self._load()

    # -- services --------------------------------------------------------------------------

    async def register_service(self, ns: NetworkService) -> NetworkService:
        ns.validate()
        self.db.put("services", ns.name, to_wire(ns))
        self.services[ns.name] = ns
        self.service_watchers.publish(ns)
        return ns

    async def unregister_service(self, name: str) -> NetworkService:
        ns = self.services.pop(name, None)
        if ns is None:
            raise NotFound(f"network service {name!r} is not registered")
        self.db.delete("services", name)
        self.service_watchers.publish(ns, deleted=True)
        return ns

    def find_services(self, query: ServiceQuery = ANY_SERVICE) -> list[NetworkService]:
        if query.name:
            ns = self.services.get(query.name)
            return [ns] if ns and query.matches(ns) else []
        return [ns for ns in self.services.values() if query.matches(ns)]

    def watch_services(self, query: ServiceQuery = ANY_SERVICE) -> Watch:
        return self.service_watchers.open(query.matches, self.find_services(query))

    # -- endpoints -------------------------------------------------------------------------

    async def register_endpoint(self, nse: NetworkServiceEndpoint) -> NetworkServiceEndpoint:
        """Upserts `nse`; its expiration_time becomes min(requested, now + expiry period)."""
        nse.validate()
        now = self.clock.time()
        expires = now + self.nse_expiry_s
        if nse.expiration_time:
            if nse.expiration_time <= now:
                raise ValidationError("expiration_time", "a time in the future",
                                      nse.expiration_time)
            expires = min(expires, nse.expiration_time)
        nse.expiration_time = expires
        old = self.endpoints.get(nse.name)
        nse.initial_registration_time = (
            old.initial_registration_time if old else nse.initial_registration_time or now)
        self.db.put("endpoints", nse.name, to_wire(nse))
        if old:
            self._unindex(old)
        self._index(nse)
        self.endpoint_watchers.publish(nse)
        return nse

    async def unregister_endpoint(self, name: str) -> NetworkServiceEndpoint:
        nse = self.endpoints.get(name)
        if nse is None:
            raise NotFound(f"network service endpoint {name!r} is not registered")
        self._remove_endpoint(nse)
        return nse

    def find_endpoints(self, query: EndpointQuery = ANY_ENDPOINT,
                       ) -> list[NetworkServiceEndpoint]:
        if query.name:
            pool = [self.endpoints[query.name]] if query.name in self.endpoints else []
        elif query.network_service_names:
            names = self._by_service.get(query.network_service_names[0], ())
            pool = [self.endpoints[n] for n in names]
        else:
            pool = list(self.endpoints.values())
        return [nse for nse in pool if query.matches(nse)]

    def endpoints_of(self, service: str) -> list[NetworkServiceEndpoint]:
        """Live endpoints offering `service`, oldest registration first (stable order)."""
        found = [self.endpoints[n] for n in self._by_service.get(service, ())]
        found.sort(key=lambda nse: (nse.initial_registration_time, nse.name))
        return found

    def watch_endpoints(self, query: EndpointQuery = ANY_ENDPOINT) -> Watch:
        return self.endpoint_watchers.open(query.matches, self.find_endpoints(query))

    # -- expiry ----------------------------------------------------------------------------

    def expire_due(self) -> list[str]:
        """Unregisters every endpoint whose expiration_time has passed; returns their names."""
        now = self.clock.time()
        expired = []
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            when, name = heapq.heappop(self._expiry_heap)
            nse = self.endpoints.get(name)
            # Stale heap entries (re-registered since) carry an older time: skip them.
            if nse is not None and nse.expiration_time == when:
                log.info("endpoint %s expired (not re-registered in time)", name)
                self._remove_endpoint(nse)
                expired.append(name)
        self._arm_expiry()
        return expired

    def close(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None

    # -- internals -------------------------------------------------------------------------

    def _remove_endpoint(self, nse: NetworkServiceEndpoint) -> None:
        self.db.delete("endpoints", nse.name)
        self._unindex(nse)
        self.endpoint_watchers.publish(nse, deleted=True)

    def _index(self, nse: NetworkServiceEndpoint) -> None:
        self.endpoints[nse.name] = nse
        for service in nse.network_service_names:
            self._by_service[service].add(nse.name)
        heapq.heappush(self._expiry_heap, (nse.expiration_time, nse.name))
        if self._expiry_heap[0][1] == nse.name:
            self._arm_expiry()

    def _unindex(self, nse: NetworkServiceEndpoint) -> None:
        del self.endpoints[nse.name]
        for service in nse.network_service_names:
            names = self._by_service.get(service)
            if names is not None:
                names.discard(nse.name)
                if not names:
                    del self._by_service[service]

    def _arm_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        while self._expiry_heap:
            when, name = self._expiry_heap[0]
            nse = self.endpoints.get(name)
            if nse is not None and nse.expiration_time == when:
                self._expiry_timer = self.clock.call_at(when, self.expire_due)
                return
            heapq.heappop(self._expiry_heap)

    def _load(self) -> None:
        for _, doc in self.db.items("services"):
            ns = from_wire(NetworkService, doc)
            self.services[ns.name] = ns
        for _, doc in self.db.items("endpoints"):
            self._index(from_wire(NetworkServiceEndpoint, doc))
        log.info("registry loaded: %d services, %d endpoints", len(self.services),
                 len(self.endpoints))
