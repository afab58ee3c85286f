"""discover: picks the endpoint for a request, round robin over the service's candidates.

The candidates are what the service's matches allow for the client's labels
(nsmd.selection). One counter per service, shared by all clients, picks where to start;
a candidate that fails is skipped and the next one tried, each at most once per request
(NSM: common/discover + roundrobin). A request that names its endpoint (a refresh or a
restore) goes to exactly that endpoint. An endpoint whose host could not be reached, or
that a client just left because its data plane died, is a suspect for SUSPECT_S: tried
after the others (its registration outlives its host by up to a minute).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict

from nsmd.clock import Clock
from nsmd.errors import NotFound, NsmdError, PermissionDenied, SelectionError, ValidationError
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceEndpoint, NetworkServiceRequest
from nsmd.peer.client import PeerError
from nsmd.registry import RegistryView
from nsmd.registry.foreign import ForeignRegistries
from nsmd.selection import candidates

SUSPECT_S = 10.0
log = logging.getLogger("nsmd.manager.discover")


class Discover(Element):
    def __init__(self, registry: RegistryView, clock: Clock,
                 foreign: ForeignRegistries | None = None):
        self.registry = registry
        self.clock = clock
        self.foreign = foreign  # SERVICE@DOMAIN: that domain's registry, mirrored
        self._next_index: dict[str, int] = defaultdict(int)
        self._suspect_until: dict[str, float] = {}

    def suspect(self, endpoint: str, seconds: float = SUSPECT_S) -> None:
        """Tries `endpoint` after the others for a while."""
        now = self.clock.time()
        self._suspect_until = {n: t for n, t in self._suspect_until.items() if t > now}
        self._suspect_until[endpoint] = now + seconds

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        if not conn.network_service:
            raise ValidationError("network_service", "the name of a network service")
        if self.foreign is not None:
            for name in (conn.network_service, conn.network_service_endpoint_name):
                if domain := self.foreign.domains.foreign(name):
                    await self.foreign.ensure(domain)
        service = self.registry.services.get(conn.network_service)
        if service is None:
            raise NotFound(f"network service {conn.network_service!r} is not registered")
        conn.payload = service.payload
        if conn.network_service_endpoint_name:
            named = self._live(conn.network_service_endpoint_name)
            if named is None:
                raise SelectionError(
                    f"endpoint {conn.network_service_endpoint_name!r} of network service "
                    f"{service.name!r} is not registered (expired or deleted)")
            if service.name not in named.network_service_names:
                raise SelectionError(f"endpoint {named.name!r} does not offer network "
                                     f"service {service.name!r}")
            return await nxt.request(request)

        live = [nse for nse in self.registry.endpoints_of(service.name)
                if nse.expiration_time > self.clock.time()]
        found = candidates(service, live, conn.labels)
        if not found:
            raise SelectionError(
                f"no endpoint of network service {service.name!r} matches the client's labels "
                f"{conn.labels or '{}'} ({len(live)} endpoint(s) registered for it)")
        failures: list[NsmdError] = []
        for nse in self._order(service.name, found):
            attempt = dataclasses.replace(request, connection=conn.clone())
            attempt.connection.network_service_endpoint_name = nse.name
            try:
                return await nxt.request(attempt)
            except NsmdError as err:
                log.warning("endpoint %s failed for %s: %s; trying the next candidate",
                            nse.name, service.name, err)
                if isinstance(err, PeerError):
                    self.suspect(nse.name)
                failures.append(err)
        if all(isinstance(err, PermissionDenied) for err in failures):
            raise failures[0]  # refused everywhere: say so (403), naming the policy
        raise SelectionError(f"every candidate endpoint of {service.name!r} failed: "
                             + "; ".join(str(err) for err in failures))

    def _order(self, service: str, found: list[NetworkServiceEndpoint],
               ) -> list[NetworkServiceEndpoint]:
        """Each candidate once, round robin from the service's counter, suspects last."""
        start = self._next_index[service]
        self._next_index[service] += 1
        order: dict[str, NetworkServiceEndpoint] = {}
        for i in range(len(found)):
            nse = found[(start + i) % len(found)]
            order.setdefault(nse.name, nse)
        now = self.clock.time()
        return sorted(order.values(), key=lambda nse: self._suspect_until.get(nse.name, 0) > now)

    def _live(self, name: str) -> NetworkServiceEndpoint | None:
        nse = self.registry.endpoints.get(name)
        return nse if nse is not None and nse.expiration_time > self.clock.time() else None
