"""paths: the way a tunnel's datagrams take when its far host sits behind a NAT, reached
through the rendezvous (nsmd/peer/rendezvous.py). A tunnel reached directly has no route
here: it is simply direct.

On the client's side (the daemon that keyed the tunnel):
- punching: both ends send to each other's NAT as the rendezvous saw it; the first
  authenticated datagram from the far end makes the path direct (the engine's roaming
  follows it to whatever port the NAT chose);
- relayed: nothing came within PUNCH_S (NATs that change ports): a relay registered as
  service nsmd-relay gives two ports (nsmd/relay.py), the far end is told to send to its
  own (peer call /v1/peer/relayed) and both ends send there; the relay passes the sealed
  datagrams, holding no keys;
- direct again: while relayed, each end probes the other's direct address every PROBE_S;
  one that gets through makes the far end roam to it and answer from there, and this end
  roams after it (both paths carry the vWire meanwhile: nothing is lost; the engine does
  not roam back to the relay while the peer is heard directly). Once datagrams came
  straight for SETTLE_S, the relay's ports are given back.
On the endpoint's side, a route holds what the client said: the relay it sends to and the
direct address it probes, until a probe's answer moves the tunnel off the relay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import urllib.parse
from collections.abc import Callable

from nsmd.caller import Caller
from nsmd.clock import Clock, every
from nsmd.dataplane import Dataplane, Wire, WireKind
from nsmd.errors import NotFound, NsmdError, PermissionDenied, ValidationError
from nsmd.manager.begin import Begin
from nsmd.peer.client import PeerClient
from nsmd.registry import RegistryView
from nsmd.relay import RELAY_SERVICE

PUNCH_S = 2.0        # a direct path that says nothing this long is not coming
PROBE_S = 2.0        # a relayed tunnel tries the direct path this often
SETTLE_S = 2.0       # straight datagrams this long before the relay is given back
RETRY_RELAY_S = 10.0
TICK_S = 0.25
log = logging.getLogger("nsmd.manager.paths")


@dataclasses.dataclass
class Route:
    direct: tuple[str, int]             # the far end's NAT, where probes go
    since: float                        # when the current state began
    far_conn: str = ""                  # client side: the far end's connection id
    relay: tuple[str, int] | None = None    # the relay port this end sends to
    via: str = ""                       # the relay's SPIFFE ID
    allocation: tuple[str, str] = ("", "")  # client side: the relay's URL, allocation id
    direct_since: float | None = None
    last_probe: float = 0.0
    last_relay_try: float = -RETRY_RELAY_S
    punched: bool = False               # the direct path opened (no relay was needed)

    def describe(self) -> str:
        if self.relay is not None:
            return f"relayed via {self.via}"
        return "direct (punched)" if self.punched else "punching"


class Paths:
    def __init__(self, dataplane: Dataplane, registry: RegistryView, clock: Clock,
                 peer: Callable[[], PeerClient | None], served: Begin):
        self.dataplane = dataplane
        self.registry = registry
        self.clock = clock
        self.peer = peer
        self.served = served

    # -- the client's side -----------------------------------------------------------------

    def punching(self, wire: Wire, far_address: tuple[str, int], far_conn: str) -> None:
        """A tunnel just keyed through the rendezvous, aimed at the far end's NAT."""
        if wire.route is None:
            wire.route = Route(far_address, self.clock.time(), far_conn)
            self.dataplane.send_soon(wire)

    async def run(self, stopping: asyncio.Event) -> None:
        async for _ in every(self.clock, TICK_S, stopping):
            for wire in list(self.dataplane.wires.values()):
                if wire.route is not None and wire.lanes:
                    try:
                        await self._step(wire)
                    except NsmdError as err:
                        log.warning("vWire %s: %s", wire.name, err)

    async def _step(self, wire: Wire) -> None:
        route: Route = wire.route
        stats = self.dataplane.stats_of(wire)
        if stats is None or "tunnel" not in stats:
            return
        tunnel, now = stats["tunnel"], self.clock.time()
        peer = tuple(tunnel["peer"])
        if route.relay is None:
            if route.punched:
                return
            if tunnel["last_rx_age_s"] is not None:
                route.punched = True
                log.info("vWire %s: direct path to %s:%d open (punched)", wire.name, *peer)
            elif route.far_conn and now - route.since >= PUNCH_S and \
                    now - route.last_relay_try >= RETRY_RELAY_S:
                route.last_relay_try = now
                await self._relay(wire, route)
            return
        if peer != route.relay:   # a probe's answer moved the tunnel off the relay
            if route.direct_since is None:
                route.direct_since = now
                log.info("vWire %s: direct path to %s:%d open; leaving relay %s",
                         wire.name, *peer, route.via)
            if now - route.direct_since >= SETTLE_S:
                await self._leave_relay(wire, route)
            return
        route.direct_since = None
        if now - route.last_probe >= PROBE_S:
            route.last_probe = now
            self.dataplane.send_soon(wire, probe=route.direct)

    async def _relay(self, wire: Wire, route: Route) -> None:
        client = self.peer()
        if client is None or wire.remote is None:
            return
        far_url, far_id = wire.remote
        relays = sorted((e for e in self.registry.endpoints_of(RELAY_SERVICE) if e.path_ids),
                        key=lambda e: e.name)
        if not relays:
            log.warning("vWire %s: no direct path to %s after %.0f s, and no relay is "
                        "registered (run one with --relay)", wire.name, far_id, PUNCH_S)
            return
        for relay in relays:
            relay_id = relay.path_ids[0]
            try:
                ends = await client.call("POST", f"{relay.url}/v1/peer/relay",
                                         {"peer": far_id, "peer_ip": route.direct[0]},
                                         expect=relay_id, direct=True)
                near, far = _address(ends, "near"), _address(ends, "far")
                await client.call("POST", f"{far_url}/v1/peer/relayed", {
                    "connection_id": route.far_conn, "relay": "{}:{}".format(*far),
                    "relay_id": relay_id}, expect=far_id)
            except NsmdError as err:
                log.warning("vWire %s: relay %s: %s", wire.name, relay_id, err)
                continue
            route.relay, route.via = near, relay_id
            route.allocation = (relay.url, str(ends["id"]))
            route.since = self.clock.time()
            self.dataplane.set_relay(wire, near)
            self.dataplane.set_peer(wire, *near)
            self.dataplane.send_soon(wire)
            log.info("vWire %s: no direct path to %s after %.0f s: relayed via %s", wire.name,
                     far_id, PUNCH_S, relay_id)
            return

    async def _leave_relay(self, wire: Wire, route: Route) -> None:
        url, allocation = route.allocation
        via = route.via
        route.relay, route.via, route.allocation, route.punched = None, "", ("", ""), True
        self.dataplane.set_relay(wire, None)
        client = self.peer()
        if url and client is not None:
            try:
                await client.call("DELETE", f"{url}/v1/peer/relay/{allocation}", expect=via,
                                  direct=True)
            except NsmdError as err:
                log.info("vWire %s: giving back relay %s: %s (it closes idle ones)",
                         wire.name, via, err)
        log.info("vWire %s: direct, relay %s given back", wire.name, via)

    # -- the endpoint's side ---------------------------------------------------------------

    def relayed(self, caller: Caller, body: object) -> dict:
        """The client's daemon says its tunnel goes through a relay: send there (it must be
        a registered relay: nobody may aim our tunnel elsewhere) and probe the client's
        direct address meanwhile."""
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in (
                "connection_id", "relay", "relay_id")):
            raise ValidationError("body", "{connection_id, relay, relay_id}")
        conn_id = body["connection_id"]
        owner = self.served.owner(conn_id)
        if owner is None:
            raise NotFound(f"no connection with id {conn_id!r}")
        if owner != caller.spiffe_id:
            raise PermissionDenied("refresh_by_owner", f"connection {conn_id} belongs to "
                                   f"{owner or 'this daemon'}, not {caller.spiffe_id}")
        conn = self.served.get(conn_id)
        wire = self.dataplane.wire_of([s.id for s in conn.path.path_segments]) if conn else None
        if wire is None or wire.kind != WireKind.TUNNEL or wire.endpoint is None:
            raise NotFound(f"no tunnel vWire for connection {conn_id!r}")
        relay = _address(body, "relay")
        relay_id = body["relay_id"]
        if not any(e.path_ids and e.path_ids[0] == relay_id and _host(e.url) == relay[0]
                   for e in self.registry.endpoints_of(RELAY_SERVICE)):
            raise PermissionDenied("tunnel_offer_address", f"{relay[0]} is no relay "
                                   f"registered by {relay_id}")
        stats = self.dataplane.stats_of(wire) or {}
        direct = tuple(stats.get("tunnel", {}).get("peer") or ("", 0))
        wire.route = Route((direct[0], direct[1]), self.clock.time(), relay=relay,
                           via=relay_id)
        self.dataplane.set_relay(wire, relay)
        self.dataplane.set_peer(wire, *relay)
        self.dataplane.send_soon(wire)
        log.info("vWire %s: relayed via %s at the client's request", wire.name, relay_id)
        return {"relayed": conn_id}


def _address(body: object, key: str) -> tuple[str, int]:
    value = body.get(key) if isinstance(body, dict) else None
    try:
        host, port = str(value).rsplit(":", 1)
        ipaddress.IPv4Address(host)
        if not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        raise ValidationError(key, "IP:PORT", value) from None
    return host, int(port)


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or ""
