"""Registry Find queries with NSM's matching rules (sdk: pkg/tools/matchutils)."""

from __future__ import annotations

import dataclasses

from nsmd.model import NetworkService, NetworkServiceEndpoint


@dataclasses.dataclass(frozen=True)
class ServiceQuery:
    name: str = ""
    payload: str = ""

    def matches(self, ns: NetworkService) -> bool:
        return (not self.name or ns.name == self.name) and (
            not self.payload or ns.payload == self.payload)


@dataclasses.dataclass(frozen=True)
class EndpointQuery:
    name: str = ""
    network_service_names: tuple[str, ...] = ()
    # service name -> labels that must be a subset of the endpoint's labels for that service
    labels: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    url: str = ""

    def matches(self, nse: NetworkServiceEndpoint) -> bool:
        if self.name and nse.name != self.name:
            return False
        if self.url and self.url not in nse.url:
            return False
        if not set(self.network_service_names) <= set(nse.network_service_names):
            return False
        for service, wanted in self.labels:
            have = nse.labels_for(service)
            if any(have.get(k) != v for k, v in wanted):
                return False
        return True
