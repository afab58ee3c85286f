"""passthrough (endpoint side, last for a `next` endpoint): composition, NSM's passthrough.

An endpoint whose spec has `next` builds no interface of its own. Its functions run on
the vWire, and it requests a service onward through this daemon's manager, as itself:
the same service (or `next.service`), with its own labels for that service replacing the
client's (or `next.labels`), so the service's matches route client -> firewall -> ...
-> gateway. The path grows by every hop; the IP context comes back from the final
endpoint. Hops on this host join in one wire without devices in between (the onward
request carries the client's mechanism down to whichever hop builds the wire); a hop on
another host is reached through the tunnel. The onward endpoint chosen first is kept on
refresh, so a chain stays where it was built. A supplier endpoint (scale from zero) hands
requests on the same way, to the endpoint it supplies (nsmd/supplies.py), labels unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from nsmd.hosting import Hosting
from nsmd.manager.chain import Chain, Element, Next
from nsmd.model import Connection, NetworkServiceRequest
from nsmd.registry import RegistryView
from nsmd.supplies import Supplies


class Passthrough(Element):
    def __init__(self, hosting: Hosting, registry: RegistryView,
                 onward: Callable[[], Chain], supplies: Supplies):
        self.hosting = hosting
        self.registry = registry
        self.onward = onward            # this daemon's server chain, acting as itself
        self.supplies = supplies
        self._next: dict[str, str] = {}  # our segment id -> the endpoint chosen onward
        # onward connection id -> ours (onward ones are listed as part of ours)
        self.inner: dict[str, str] = {}

    def is_passthrough(self, endpoint: str) -> bool:
        spec = self.hosting.spec(endpoint)
        return spec is not None and spec.builds_no_device

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        spec = self.hosting.require(conn.network_service_endpoint_name)
        if not spec.builds_no_device:
            return await nxt.request(request)
        ours, service, labels = conn.id, conn.network_service, dict(conn.labels)
        endpoint = conn.network_service_endpoint_name
        if spec.supplier is not None:  # scale from zero: to the endpoint it supplies
            conn.network_service_endpoint_name = await self.supplies.ensure(
                endpoint, spec.supplier, service)
        else:
            assert spec.next is not None
            conn.network_service = spec.next.service or service
            conn.labels = dict(spec.next.labels) or self._own_labels(endpoint, service)
            conn.network_service_endpoint_name = self._next.get(ours, "")
        result = await self.onward().request(request)
        self._next[ours] = result.network_service_endpoint_name
        self.inner[result.path.path_segments[result.path.index + 1].id] = ours
        result.network_service, result.labels = service, labels
        result.network_service_endpoint_name = endpoint
        return result

    async def close(self, conn: Connection, nxt: Next) -> None:
        ours = conn.id
        if ours not in self._next and not self.is_passthrough(conn.network_service_endpoint_name):
            return await nxt.close(conn)
        onward = conn.clone()
        onward.network_service_endpoint_name = self._next.pop(ours, "")
        segments = onward.path.path_segments
        if onward.path.index + 1 < len(segments):
            self.inner.pop(segments[onward.path.index + 1].id, None)
        await self.onward().close(onward)

    def _own_labels(self, endpoint: str, service: str) -> dict[str, str]:
        nse = self.registry.endpoints.get(endpoint)
        return dict(nse.labels_for(service)) if nse is not None else {}
