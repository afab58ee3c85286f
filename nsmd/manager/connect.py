"""connect: hands the request to the endpoint it was routed to.

An endpoint this daemon hosts runs the local endpoint chain (ipam, wire); one hosted by
another daemon is reached through that daemon over mTLS and an encrypted tunnel
(remote.RemoteConnect). A failure there fails this candidate; discover tries the next.
"""

from __future__ import annotations

from nsmd.hosting import Hosting
from nsmd.manager.chain import Chain, Element, Next
from nsmd.manager.remote import RemoteConnect
from nsmd.model import Connection, NetworkServiceRequest


class Connect(Element):
    def __init__(self, hosting: Hosting, local: Chain, remote: RemoteConnect):
        self.hosting = hosting
        self.local = local
        self.remote = remote

    def describe(self) -> str:
        return f"connect [endpoint here: {self.local.describe(expand=True)} | " \
               "elsewhere: remote]"

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        if self.hosting.spec(request.connection.network_service_endpoint_name) is not None:
            conn = await self.local.request(request)
        else:
            conn = await self.remote.request(request)
        request.connection = conn
        return await nxt.request(request)

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            wire = self.remote.dataplane.get(conn.id)
            if wire is not None and wire.remote is not None:  # we keyed it towards a peer
                await self.remote.close(conn)
            else:
                # works by connection id, even after the endpoint itself is gone
                await self.local.close(conn)
        finally:
            await nxt.close(conn)
