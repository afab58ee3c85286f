"""The in-memory side of a registry: records indexed by name and service, Find, and watch.

Both the local registry (SQLite-backed, with expiry) and the mirror of a remote one build
on it, so lookups on the request path never leave the process.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from nsmd.errors import PermissionDenied
from nsmd.model import NetworkService, NetworkServiceEndpoint
from nsmd.registry.query import EndpointQuery, ServiceQuery
from nsmd.registry.watch import Watch, Watchers

# The expiration_time of a record its registrant keeps alive for as long as it runs
# (9999-12-31): a daemon's hosted endpoints in its own registry, or on its etcd lease.
KEPT_ALIVE = 253402300799.0
ANY_SERVICE = ServiceQuery()
ANY_ENDPOINT = EndpointQuery()


class RegistryView:
    def __init__(self) -> None:
        self.services: dict[str, NetworkService] = {}
        self.endpoints: dict[str, NetworkServiceEndpoint] = {}
        self._by_service: dict[str, set[str]] = defaultdict(set)
        self._per_registrant: Counter[str] = Counter()  # first path id -> records it holds
        self.service_watchers = Watchers()
        self.endpoint_watchers = Watchers()

    # -- reads -----------------------------------------------------------------------------

    def find_services(self, query: ServiceQuery = ANY_SERVICE) -> list[NetworkService]:
        if query.name:
            ns = self.services.get(query.name)
            return [ns] if ns and query.matches(ns) else []
        return [ns for ns in self.services.values() if query.matches(ns)]

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

    def records_of(self, registrant: str) -> int:
        """How many services and endpoints `registrant` (a SPIFFE ID) holds (its quota)."""
        return self._per_registrant[registrant]

    def watch_services(self, query: ServiceQuery = ANY_SERVICE) -> Watch:
        return self.service_watchers.open(query.matches, self.find_services(query))

    def watch_endpoints(self, query: EndpointQuery = ANY_ENDPOINT) -> Watch:
        return self.endpoint_watchers.open(query.matches, self.find_endpoints(query))

    # -- writes: the local registry persists them, a remote one forwards them ---------------

    async def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def register_service(self, ns: NetworkService, owner: str | None = None,
                               ) -> NetworkService:
        raise NotImplementedError

    async def unregister_service(self, name: str, owner: str | None = None) -> NetworkService:
        raise NotImplementedError

    async def register_endpoint(self, nse: NetworkServiceEndpoint, owner: str | None = None,
                                keep: bool = False) -> NetworkServiceEndpoint:
        """Registers `nse`. keep: this daemon keeps the record alive while it runs (its
        hosted endpoints); the registry says so with expiration_time KEPT_ALIVE, and the
        caller need not re-register. A registry that cannot keep it returns the usual
        expiry, to be refreshed at 2/3."""
        raise NotImplementedError

    async def unregister_endpoint(self, name: str, owner: str | None = None,
                                  ) -> NetworkServiceEndpoint:
        raise NotImplementedError

    # -- in-memory changes (callers persist or forward first) -------------------------------

    def _put_service(self, ns: NetworkService) -> None:
        self._count(self.services.get(ns.name), -1)
        self.services[ns.name] = ns
        self._count(ns, 1)
        self.service_watchers.publish(ns)

    def _drop_service(self, ns: NetworkService) -> None:
        self._count(self.services.pop(ns.name, None), -1)
        self.service_watchers.publish(ns, deleted=True)

    def _put_endpoint(self, nse: NetworkServiceEndpoint) -> None:
        old = self.endpoints.get(nse.name)
        if old is not None:
            self._unindex(old)
        self.endpoints[nse.name] = nse
        self._count(nse, 1)
        for service in nse.network_service_names:
            self._by_service[service].add(nse.name)
        self.endpoint_watchers.publish(nse)

    def _drop_endpoint(self, nse: NetworkServiceEndpoint) -> None:
        if nse.name in self.endpoints:
            self._unindex(self.endpoints[nse.name])
        self.endpoint_watchers.publish(nse, deleted=True)

    def _count(self, record: NetworkService | NetworkServiceEndpoint | None, step: int) -> None:
        if record is not None and record.path_ids:
            registrant = record.path_ids[0]
            self._per_registrant[registrant] += step
            if not self._per_registrant[registrant]:
                del self._per_registrant[registrant]

    def _unindex(self, nse: NetworkServiceEndpoint) -> None:
        self._count(nse, -1)
        del self.endpoints[nse.name]
        for service in nse.network_service_names:
            names = self._by_service.get(service)
            if names is not None:
                names.discard(nse.name)
                if not names:
                    del self._by_service[service]


def check_owner(existing: list[str] | None, owner: str | None, what: str,
                self_id: str) -> list[str]:
    """NSM's registry policy: a name may be (re)registered or removed only by the SPIFFE ID
    that first registered it (path_ids[0]). `existing` is the record's path_ids (None: no
    record yet). `owner` None is this registry's own daemon (its local API and hosted
    endpoints), `self_id` its SPIFFE ID ("" without identity); a record without path_ids
    belongs to it too, never to the first peer that writes it. Returns the path_ids to
    store."""
    caller = self_id if owner is None else owner
    if existing is not None:
        holder = existing[0] if existing else self_id
        if holder != caller:
            raise PermissionDenied("registry_owner", f"{what} is owned by "
                                   f"{holder or 'this registry daemon'}, not {caller}")
    return [caller] if caller else []
