"""excluded prefixes (client side, after begin and held): NSM's excludedprefixes client.

Every request for a local client, the first and each replay (refresh, heal), carries the
addresses its namespace already has through its other vWires, so the endpoint's IPAM does
not hand them out again. They are worked out afresh per request and not kept in the
connection that comes back: kept, a namespace with N vWires held N² prefixes (a 1,000-vWire
namespace, 60 KiB per connection).
"""

from __future__ import annotations

from collections.abc import Callable

from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest


class ExcludedPrefixes(Element):
    def __init__(self, addresses_in: Callable[[str, str], list[str]]):
        # (namespace, connection id) -> the namespace's vWire addresses but that connection's
        self._addresses_in = addresses_in

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        netns = _client_netns(request)
        if netns is not None:
            conn.context.ip_context.excluded_prefixes = self._addresses_in(netns, conn.id)
        returned = await nxt.request(request)
        returned.context.ip_context.excluded_prefixes = []
        return returned

    async def close(self, conn: Connection, nxt: Next) -> None:
        await nxt.close(conn)


def _client_netns(request: NetworkServiceRequest) -> str | None:
    """The namespace the client's interface goes into ("" the daemon's own), or None."""
    for preferred in request.mechanism_preferences:
        return preferred.parameters.get("netns", "")
    chosen = request.connection.mechanism
    return chosen.parameters.get("netns", "") if chosen is not None else None
