"""authorize (server side, first): what a caller of this daemon's manager may ask for.

This daemon's own client side (ActAsDaemon marks it) was checked when its local user
connected. A peer daemon (mTLS) gets NSM's default policies and nsmd's own, each denial
naming its policy and changing nothing, since nothing has run yet:

- refresh_by_owner: a request or close that reaches one of our existing connections
  comes from the peer that created it; the path after the caller's segment is ours
  (taken from our record, never from the caller), so a peer cannot point us at another
  connection's segments;
- the token policies of tokenchain.py (valid, unexpired, chained, signed by the caller);
- remote_mechanisms_only: an NSMD_UDP tunnel offer, never a local interface; the tunnel
  goes to the caller's own address, whatever the offer says (mechanisms.aim_at_caller);
- hosted_endpoints_only: an endpoint this daemon hosts; no relaying for a peer;
- the --policy file's `request` list for the service (caller and path origin).
"""

from __future__ import annotations

from collections.abc import Callable

from nsmd import defaults
from nsmd.caller import CALLER, DAEMON, Caller
from nsmd.clock import Clock
from nsmd.errors import PermissionDenied
from nsmd.hosting import Hosting
from nsmd.identity.tokens import Trusted
from nsmd.manager import mechanisms
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.manager.tokenchain import check_path
from nsmd.model import Connection, NetworkServiceRequest, Path
from nsmd.policy import Policy
from nsmd.quotas import Quotas


class ActAsDaemon(Element):
    """Marks what follows as this daemon's own doing (its client side, replays, a
    passthrough's onward request), remembering whom it acts for."""

    label = "act as daemon"

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        token = CALLER.set(_daemon_for(CALLER.get()))
        try:
            return await nxt.request(request)
        finally:
            CALLER.reset(token)

    async def close(self, conn: Connection, nxt: Next) -> None:
        token = CALLER.set(_daemon_for(CALLER.get()))
        try:
            await nxt.close(conn)
        finally:
            CALLER.reset(token)


class Authorize(Element):
    def __init__(self, name: str, begin: Begin, hosting: Hosting, policy: Policy,
                 clock: Clock, own_id: Callable[[], str],
                 trust_domains: Callable[[], frozenset[str]],
                 trust_chain: Callable[[tuple[str, ...]], Trusted],
                 max_token_s: float = defaults.TOKEN_LIFETIME_S,
                 quotas: Quotas | None = None):
        self.name = name
        self.quotas = quotas or Quotas()
        self.max_token_s = max_token_s
        self.trust_chain = trust_chain   # an x5c chain -> its leaf's SPIFFE ID and key
        self.begin = begin
        self.hosting = hosting
        self.policy = policy
        self.clock = clock
        self.own_id = own_id
        self.trust_domains = trust_domains

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        caller = _caller()
        if caller.kind == "daemon":
            return await nxt.request(request)
        conn = request.connection
        self._check_caller_segment(conn.path)
        if self._take_our_segments(conn.path, caller) is None:   # a new one: within quota?
            self.quotas.check("connections-per-peer", self.begin.held_by(caller.spiffe_id),
                              caller)
        expires, origin = check_path(conn.path, caller, self.own_id(), self.trust_domains(),
                                     self.clock.time(), self.max_token_s, self.trust_chain)
        # The caller's segment ends when its token does: our timeout fires then.
        conn.path.path_segments[conn.path.index].expires = expires
        _check_mechanisms(request, caller)
        self._check_endpoint(conn)
        self.policy.check("request", conn.network_service, caller)
        if origin != caller.spiffe_id:
            self.policy.check("request", conn.network_service, Caller("peer", spiffe_id=origin))
        return await nxt.request(request)

    async def close(self, conn: Connection, nxt: Next) -> None:
        caller = _caller()
        if caller.kind != "daemon":
            self._check_caller_segment(conn.path)
            if self._take_our_segments(conn.path, caller) is None:
                return  # not one of ours: closing it is a no-op (NSM)
        await nxt.close(conn)

    # -- checks ----------------------------------------------------------------------------

    def _check_caller_segment(self, path: Path) -> None:
        segments = path.path_segments
        if not 0 <= path.index < len(segments):
            raise PermissionDenied("tokens_valid", "the path has no caller segment")
        if segments[path.index].name == self.name:
            raise PermissionDenied("refresh_by_owner", "the caller's segment carries this "
                                   "daemon's name")

    def _take_our_segments(self, path: Path, caller: Caller) -> str | None:
        """Our segment's id if the path reaches an existing connection of the caller's
        (the rest of the path is then replaced by ours); otherwise the path is cut after
        the caller's segment, so every id after it is new. Returns the id or None."""
        segments = path.path_segments
        after = path.index + 1
        ours = segments[after].id if after < len(segments) and \
            segments[after].name == self.name else ""
        owner = self.begin.owner(ours) if ours else None
        if owner is None:
            del segments[after:]
            return None
        if owner != caller.spiffe_id:
            raise PermissionDenied("refresh_by_owner", f"connection {ours} belongs to "
                                   f"{owner or 'this daemon'}, not {caller.spiffe_id}")
        stored = self.begin.get(ours)
        assert stored is not None
        segments[after:] = stored.path.path_segments[after:]
        return ours

    def _check_endpoint(self, conn: Connection) -> None:
        name = conn.network_service_endpoint_name
        if not name or self.hosting.spec(name) is None:
            raise PermissionDenied("hosted_endpoints_only", f"endpoint {name or '(none)'!r} "
                                   "is not hosted by this daemon; peers may only reach "
                                   "endpoints hosted here")


def _daemon_for(caller: Caller | None) -> Caller:
    return DAEMON if caller is None or caller is DAEMON else Caller("daemon", via=caller)


def _caller() -> Caller:
    caller = CALLER.get()
    if caller is None:
        raise PermissionDenied("caller_known", "the request carries no caller identity")
    return caller


def _check_mechanisms(request: NetworkServiceRequest, caller: Caller) -> None:
    conn = request.connection
    offered = list(request.mechanism_preferences)
    if conn.mechanism is not None:
        offered.append(conn.mechanism)
    if not offered:
        raise PermissionDenied("remote_mechanisms_only", f"a peer must offer an "
                               f"{mechanisms.TUNNEL} tunnel")
    for mech in offered:
        if mech.cls != "REMOTE" or mech.type != mechanisms.TUNNEL:
            raise PermissionDenied("remote_mechanisms_only", f"a peer may only ask for "
                                   f"{mechanisms.TUNNEL} (REMOTE) tunnels, not {mech.cls} "
                                   f"{mech.type or '(no type)'}")
        mechanisms.aim_at_caller(mech.parameters, caller)
