"""updatetoken: stamps this hop's path segment with its expiry (token lifetime from now).

Segment `expires` drives client refresh and server-side timeout (NSM: common/updatetoken).
Signing the segment's JWT with the SPIFFE key belongs here too, once identities exist.
"""

from __future__ import annotations

from nsmd.clock import Clock
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest

DEFAULT_TOKEN_LIFETIME_S = 600.0  # NSM_MAX_TOKEN_LIFETIME


class UpdateToken(Element):
    def __init__(self, clock: Clock, lifetime_s: float = DEFAULT_TOKEN_LIFETIME_S):
        self.clock = clock
        self.lifetime_s = lifetime_s

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        conn.path.path_segments[conn.path.index].expires = self.clock.time() + self.lifetime_s
        return await nxt.request(request)
