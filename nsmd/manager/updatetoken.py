"""updatetoken: signs this hop's path segment and stamps its expiry (NSM: common/updatetoken).

The token is an ES256 JWT from this daemon's SVID (identity/tokens.py) with this daemon
as `sub` and, here, as `aud` too: the next hop is this daemon's own manager or a hosted
endpoint. A hop towards another daemon signs its segment again for that daemon just
before calling it (remote.py). `expires` is the token's expiry: it drives the client's
refresh and the next hop's timeout. A daemon without an identity (no peers) stamps
`expires` only. The path's first segment (the client's) carries the certificate chain
(tokens.py): it says who began the path to every later hop.
"""

from __future__ import annotations

from collections.abc import Callable

from nsmd import defaults
from nsmd.clock import Clock
from nsmd.identity.tokens import Signer
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest, PathSegment


def sign_segment(segment: PathSegment, signer: Signer | None, aud: str, now: float,
                 lifetime_s: float, origin: bool = False) -> None:
    if signer is None:
        segment.expires = now + lifetime_s
        return
    segment.token, segment.expires = signer.sign(aud, now, with_chain=origin)


class UpdateToken(Element):
    def __init__(self, clock: Clock, lifetime_s: float = defaults.TOKEN_LIFETIME_S,
                 signer: Callable[[], Signer | None] = lambda: None):
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.signer = signer

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        signer = self.signer()
        sign_segment(conn.path.path_segments[conn.path.index], signer,
                     signer.spiffe_id if signer else "", self.clock.time(), self.lifetime_s,
                     origin=conn.path.index == 0)
        return await nxt.request(request)
