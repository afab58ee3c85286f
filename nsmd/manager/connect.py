"""connect: hands the request to the endpoint it was routed to.

An endpoint this daemon hosts (its registered url is ours) runs the local endpoint chain.
Endpoints of other daemons need the peer control plane, which this build does not have:
such a candidate fails and discover tries the next one.
"""

from __future__ import annotations

from nsmd.errors import SelectionError
from nsmd.hosting import Hosting
from nsmd.manager.chain import Chain, Element, Next
from nsmd.model import Connection, NetworkServiceRequest
from nsmd.registry import Registry


class Connect(Element):
    def __init__(self, registry: Registry, hosting: Hosting, local: Chain):
        self.registry = registry
        self.hosting = hosting
        self.local = local

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        name = request.connection.network_service_endpoint_name
        if self.hosting.spec(name) is None:
            nse = self.registry.endpoints.get(name)
            url = nse.url if nse else "?"
            raise SelectionError(f"endpoint {name!r} is hosted by another daemon ({url}); "
                                 "vWires to other hosts are not supported by this build")
        conn = await self.local.request(request)
        request.connection = conn
        return await nxt.request(request)

    async def close(self, conn: Connection, nxt: Next) -> None:
        # The local chain's close works by connection id, even after the endpoint is gone.
        try:
            await self.local.close(conn)
        finally:
            await nxt.close(conn)
