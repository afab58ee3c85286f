"""excluded prefixes (client side, after begin and held): NSM's excludedprefixes client.

Every request for a local client, the first and each replay (refresh, heal), carries the
addresses its namespace already has through its other vWires, so the endpoint's IPAM does
not hand them out again. They are not kept in the connection that comes back: kept, a
namespace with N vWires held N² prefixes (a 1,000-vWire namespace, 60 KiB per connection).

What each connection was given is indexed here as it comes back (its namespace and client
addresses) and dropped when it closes: working it out from every held connection instead
unpacked all of them for each request, N² unpackings (10 ms a request at 1,000 vWires).
"""

from __future__ import annotations

import sys

from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest, State


class ExcludedPrefixes(Element):
    label = "excluded"

    def __init__(self) -> None:
        # connection id -> (the namespace of its interface, its client addresses)
        self._given: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _addresses_in(self, netns: str, but: str) -> list[str]:
        """The client addresses of the vWires into `netns`, but connection `but`'s."""
        return [addr for conn_id, (ns, addresses) in self._given.items()
                if ns == netns and conn_id != but for addr in addresses]

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        netns = _client_netns(request)
        if netns is not None:
            conn.context.ip_context.excluded_prefixes = self._addresses_in(netns, conn.id)
        returned = await nxt.request(request)
        returned.context.ip_context.excluded_prefixes = []
        self.keep(returned)
        return returned

    def keep(self, conn: Connection) -> None:
        """Indexes what a connection was given: as it comes back, and for one held before a
        restart whose restore failed (begin adopts it; heal brings it back with these)."""
        if conn.mechanism is not None:
            self._given[conn.id] = (sys.intern(conn.mechanism.parameters.get("netns", "")),
                                    tuple(conn.context.ip_context.src_ip_addrs))

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            if conn.state != State.RESELECT_REQUESTED:  # replaced, not gone: keep them
                self._given.pop(conn.id, None)


def _client_netns(request: NetworkServiceRequest) -> str | None:
    """The namespace the client's interface goes into ("" the daemon's own), or None."""
    for preferred in request.mechanism_preferences:
        return preferred.parameters.get("netns", "")
    chosen = request.connection.mechanism
    return chosen.parameters.get("netns", "") if chosen is not None else None
