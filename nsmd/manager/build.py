"""The manager's chains, in order, and the operations the API calls.

server: what any caller of this daemon reaches (its own client side, peer daemons)
    updatepath(node) -> begin -> updatetoken -> metrics -> timeout -> monitor
    -> discover -> connect -> [endpoint: updatepath(nse) -> updatetoken -> ipam -> wire]
                           or [remote: tunnel to the endpoint's daemon]
client: the connections this daemon holds for `nsmd connect` users
    heal -> begin -> updatetoken -> held -> refresh -> server
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from nsmd.clock import Clock
from nsmd.dataplane import Dataplane
from nsmd.errors import NotFound, NsmdError, ValidationError
from nsmd.hosting import Hosting
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain
from nsmd.manager.connect import Connect
from nsmd.manager.discover import Discover
from nsmd.manager.heal import Heal
from nsmd.manager.held import Held
from nsmd.manager.ipam import Ipam
from nsmd.manager.mechanisms import DEFAULT_TUNNEL_MTU, KERNEL
from nsmd.manager.metrics import RequestMetrics
from nsmd.manager.monitor import Monitor
from nsmd.manager.refresh import Refresh
from nsmd.manager.remote import RemoteConnect
from nsmd.manager.timeout import Timeout
from nsmd.manager.updatepath import UpdatePath
from nsmd.manager.updatetoken import DEFAULT_TOKEN_LIFETIME_S, UpdateToken
from nsmd.manager.wire import DEFAULT_LOCAL_MTU, VWire
from nsmd.metrics import Metrics
from nsmd.model import (
    Connection,
    Mechanism,
    NetworkServiceRequest,
    Path,
    PathSegment,
    State,
)
from nsmd.peer.client import PeerClient
from nsmd.registry import PermissionDenied, RegistryView
from nsmd.state import StateDB

log = logging.getLogger("nsmd.manager")


class Manager:
    def __init__(self, *, name: str, registry: RegistryView, hosting: Hosting,
                 dataplane: Dataplane, db: StateDB, clock: Clock, metrics: Metrics,
                 peer: Callable[[], PeerClient | None] = lambda: None,
                 token_lifetime_s: float = DEFAULT_TOKEN_LIFETIME_S,
                 local_mtu: int = DEFAULT_LOCAL_MTU,
                 tunnel_mtu: int = DEFAULT_TUNNEL_MTU, keepalive_s: float = 1.0):
        self.name = name
        self.registry = registry
        self.dataplane = dataplane
        self.peer = peer
        self.callers: dict[str, str] = {}  # our segment id -> SPIFFE ID of the peer daemon
        self.server_begin = Begin()
        self.monitor = Monitor(self.server_begin)
        self.timeout = Timeout(clock, self.server_begin)
        self.ipam = Ipam(hosting, db)
        endpoint = Chain(
            UpdatePath(lambda conn: conn.network_service_endpoint_name),
            UpdateToken(clock, token_lifetime_s),
            self.ipam,
            VWire(dataplane, hosting, local_mtu, tunnel_mtu, keepalive_s),
        )
        self.server = Chain(
            UpdatePath(name),
            self.server_begin,
            UpdateToken(clock, token_lifetime_s),
            RequestMetrics(metrics),
            self.timeout,
            self.monitor,
            Discover(registry, clock),
            Connect(hosting, endpoint,
                    RemoteConnect(registry, dataplane, peer, keepalive_s, tunnel_mtu)),
        )
        self.client_begin = Begin()
        self.heal = Heal(clock, self.client_begin)
        self.refresh = Refresh(clock, self.client_begin, self.heal)
        self.held = Held(db)
        self.client = Chain(
            self.heal,  # before begin: sees only the caller's closes, not its own reselects
            self.client_begin,
            UpdateToken(clock, token_lifetime_s),
            self.held,
            self.refresh,
            self.server,
        )
        self.server_begin.on_dropped.append(self.heal.on_server_dropped)
        self.server_begin.on_dropped.append(lambda conn: self.callers.pop(conn.id, None))

    def shutdown(self) -> None:
        """Stops timers and healing; connections stay as they are for the next run."""
        self.refresh.stop()
        self.heal.stop()
        self.timeout.stop()

    # -- operations ------------------------------------------------------------------------

    async def connect(self, service: str, labels: dict[str, str], netns: str = "",
                      ifname: str = "", client_name: str = "") -> Connection:
        """Requests a vWire for a local client and keeps it refreshed until closed."""
        conn_id = str(uuid.uuid4())
        conn = Connection(
            id=conn_id, network_service=service, labels=dict(labels),
            path=Path(index=0, path_segments=[PathSegment(
                name=client_name or f"nsc@{netns or self.name}", id=conn_id)]))
        # Addresses this namespace already has through other vWires must not come back.
        conn.context.ip_context.excluded_prefixes = self._addresses_in(netns)
        params = {"netns": netns}
        if ifname:
            params["name"] = ifname
        request = NetworkServiceRequest(
            connection=conn,
            mechanism_preferences=[Mechanism(cls="LOCAL", type=KERNEL, parameters=params)])
        return self.with_metrics(await self.client.request(request))

    async def close(self, conn_id: str) -> None:
        """Closes a held connection by its id (as `connect` returned it) or its manager id."""
        conn = self.client_begin.get(conn_id)
        if conn is not None:
            await self.client.close(conn)
            return
        if not await self.server_begin.close_by_id(conn_id):
            raise NotFound(f"no connection with id {conn_id!r}")

    async def serve_peer(self, request: NetworkServiceRequest, peer_id: str) -> Connection:
        """A Request from another daemon (the client's host) for an endpoint we host."""
        conn = await self.server.request(request)
        self.callers[_our_id(conn)] = peer_id
        return conn

    async def close_for_peer(self, conn: Connection, peer_id: str) -> None:
        ours = _our_id(conn)
        if ours not in self.callers:
            return  # unknown: closing it is a no-op (NSM)
        self.check_peer_owns(ours, peer_id)
        await self.server.close(conn)
        self.callers.pop(ours, None)

    def check_peer_owns(self, conn_id: str, peer_id: str) -> None:
        owner = self.callers.get(conn_id)
        if owner is None:
            raise NotFound(f"no connection with id {conn_id!r}")
        if owner != peer_id:
            raise PermissionDenied(f"connection {conn_id} belongs to {owner}, not {peer_id}")

    def connections(self) -> list[Connection]:
        """Every vWire served here, as its outermost hop in this daemon sees it; held
        connections whose path is broken (being healed) are listed as DOWN."""
        held = {c.id: c for c in self.client_begin.connections()}
        result = []
        for conn in self.server_begin.connections():
            client_id = conn.path.path_segments[0].id if conn.path.path_segments else ""
            result.append(self.with_metrics(held.pop(client_id, conn)))
        for conn in held.values():
            conn.state = State.DOWN
            result.append(conn)
        return result

    def get(self, conn_id: str) -> Connection:
        for conn in self.connections():
            if conn.id == conn_id or any(s.id == conn_id for s in conn.path.path_segments):
                return conn
        raise NotFound(f"no connection with id {conn_id!r}")

    async def close_endpoint_connections(self, endpoint: str) -> int:
        """Closes every connection to `endpoint` (it is being deleted); clients heal."""
        doomed = [c.id for c in self.server_begin.peek()
                  if c.network_service_endpoint_name == endpoint]
        for conn_id in doomed:
            await self.server_begin.close_by_id(conn_id)
        return len(doomed)

    async def restore(self) -> tuple[int, int]:
        """Requests again every connection held before a restart: (restored, lost)."""
        restored = lost = 0
        for request in self.held.stored():
            conn_id = request.connection.id
            try:
                await self.client.request(request)
                restored += 1
                continue
            except NsmdError as err:
                log.warning("restoring %s on its old path failed (%s): reselecting", conn_id, err)
            request.connection.state = State.RESELECT_REQUESTED
            request.connection.network_service_endpoint_name = ""
            request.connection.mechanism = None
            try:
                await self.client.request(request)
                restored += 1
            except NsmdError as err:
                log.error("connection %s is lost: %s", conn_id, err)
                self.held.forget(conn_id)
                lost += 1
        return restored, lost

    def wire_ids(self) -> set[str]:
        """Ids of the endpoint segments of every live connection (= their wires' keys)."""
        return {c.path.path_segments[-1].id for c in self.server_begin.peek()
                if c.path.path_segments}

    def with_metrics(self, conn: Connection) -> Connection:
        """Copies the wire's counters into the endpoint segment's metrics, as NSM does."""
        if not conn.path.path_segments:
            return conn
        stats = self.dataplane.stats(conn.path.path_segments[-1].id)
        if stats is not None:
            up, down = stats["client_to_endpoint"], stats["endpoint_to_client"]
            conn.path.path_segments[-1].metrics = {
                "tx_packets": str(up["tx_packets"]), "tx_bytes": str(up["tx_bytes"]),
                "rx_packets": str(down["tx_packets"]), "rx_bytes": str(down["tx_bytes"]),
                "drops": str(sum(up["drops"].values()) + sum(down["drops"].values())),
            }
        return conn

    def _addresses_in(self, netns: str) -> list[str]:
        return [addr for c in self.client_begin.peek()
                if c.mechanism is not None and c.mechanism.parameters.get("netns") == netns
                for addr in c.context.ip_context.src_ip_addrs]


def _our_id(conn: Connection) -> str:
    """Our segment's id in a connection as its caller sees it (index = the caller's)."""
    segments = conn.path.path_segments
    if conn.path.index + 1 >= len(segments):
        raise ValidationError("connection.path", "a path that reaches this daemon")
    return segments[conn.path.index + 1].id
