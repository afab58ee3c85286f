"""The manager's chains, in order, and the operations the API calls.

client: the connections this daemon holds for `nsmd connect` users
    heal -> begin -> updatetoken -> held -> excluded -> resolvconf -> refresh
    -> act as daemon -> server
server: what any caller of this daemon reaches (its own client side, peer daemons)
    authorize -> updatepath -> begin -> updatetoken -> metrics -> timeout -> monitor
    -> discover -> connect [endpoint here: updatepath -> updatetoken -> vl3ipam -> ipam
    -> functions -> passthrough -> wire | elsewhere: remote]
(Chain.describe() gives these; tests/manager/test_chains.py keeps them and
docs/architecture.md equal. A passthrough's onward request goes act as daemon -> server.)

Local users are checked against the policy where they enter (connect, close); peers by
authorize at the head of the server chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable

from nsmd import defaults
from nsmd.caller import CALLER, DAEMON, Caller, check_local_netns
from nsmd.clock import Clock, backoff
from nsmd.dataplane import Dataplane
from nsmd.errors import DataplaneError, NotFound, NsmdError, PermissionDenied, SelectionError
from nsmd.hosting import NODE_LABEL, Hosting
from nsmd.identity.identity import Identity
from nsmd.identity.svid import IdentityError
from nsmd.identity.tokens import Signer, Trusted
from nsmd.manager.authorize import ActAsDaemon, Authorize
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain, Next
from nsmd.manager.connect import Connect
from nsmd.manager.discover import Discover
from nsmd.manager.dropnotice import DropNotices
from nsmd.manager.excluded import ExcludedPrefixes
from nsmd.manager.functions import Functions
from nsmd.manager.heal import MAX_RETRY_S, RETRY_S, Heal
from nsmd.manager.held import Held
from nsmd.manager.ipam import Ipam
from nsmd.manager.liveness import Liveness
from nsmd.manager.manifests import Manifests
from nsmd.manager.mechanisms import KERNEL
from nsmd.manager.metrics import RequestMetrics
from nsmd.manager.monitor import Monitor
from nsmd.manager.netsvcmonitor import ServiceMonitor
from nsmd.manager.passthrough import Passthrough
from nsmd.manager.paths import Paths
from nsmd.manager.probe import DataplaneProbe, timings
from nsmd.manager.refresh import Refresh
from nsmd.manager.rekey import Rekeyer
from nsmd.manager.remote import RemoteConnect
from nsmd.manager.resolvconf import ResolvConf
from nsmd.manager.timeout import Timeout
from nsmd.manager.updatepath import UpdatePath
from nsmd.manager.updatetoken import UpdateToken
from nsmd.manager.vl3dns import Vl3Resolvers
from nsmd.manager.vl3ipam import Vl3Ipam
from nsmd.manager.vl3mesh import Mesh
from nsmd.manager.wire import VWire
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
from nsmd.plugins.api import FunctionHost
from nsmd.policy import Policy
from nsmd.quotas import Quotas
from nsmd.registry import RegistryView
from nsmd.registry.foreign import ForeignRegistries
from nsmd.state import StateDB
from nsmd.supplies import Supplies

log = logging.getLogger("nsmd.manager")


class Manager:
    def __init__(self, *, name: str, registry: RegistryView, hosting: Hosting,
                 dataplane: Dataplane, db: StateDB, clock: Clock, metrics: Metrics,
                 peer: Callable[[], PeerClient | None] = lambda: None,
                 identity: Callable[[], Identity | None] = lambda: None,
                 policy: Policy | None = None,
                 token_lifetime_s: float = defaults.TOKEN_LIFETIME_S,
                 local_mtu: int = defaults.LOCAL_MTU,
                 tunnel_mtu: int = defaults.TUNNEL_MTU, keepalive_s: float = defaults.KEEPALIVE_S,
                 heal_detect_s: float = defaults.HEAL_DETECT_S,
                 rekey_after_s: float = defaults.REKEY_AFTER_S,
                 dns_upstream: list[tuple[str, int]] | None = None,
                 foreign: ForeignRegistries | None = None, registry_only: bool = False,
                 function_host: FunctionHost | None = None, quotas: Quotas | None = None):
        self.name = name
        self.clock = clock
        self.registry = registry
        self.dataplane = dataplane
        self.peer = peer
        self.identity = identity
        self.policy = policy or Policy.allow_all()
        self.quotas = quotas or Quotas()
        self.server_begin = Begin()
        self.paths = Paths(dataplane, registry, clock, peer, self.server_begin)
        self.foreign = foreign
        self.registry_only = registry_only  # a floating registry: no vWires here
        self.discover = Discover(registry, clock, foreign)
        self.monitor = Monitor(self.server_begin)
        self.timeout = Timeout(clock, self.server_begin)
        self.ipam = Ipam(hosting, db)
        self.vl3_ipam = Vl3Ipam(hosting, registry, db, self.own_id,
                                lambda conn_id: self.held.owner(conn_id))
        self.functions = Functions(hosting, dataplane, clock, function_host)
        self.supplies = Supplies(hosting, db, clock, name, self.server_begin.each)
        self.passthrough = Passthrough(hosting, registry, lambda: self._as_daemon,
                                       self.supplies)
        endpoint = Chain(
            UpdatePath(lambda conn: conn.network_service_endpoint_name),
            UpdateToken(clock, token_lifetime_s, self.signer),
            self.vl3_ipam,
            self.ipam,
            self.functions,
            self.passthrough,
            VWire(dataplane, hosting, local_mtu, tunnel_mtu, keepalive_s, self.own_id),
        )
        self.server = Chain(
            Authorize(name, self.server_begin, hosting, self.policy, clock, self.own_id,
                      self.trust_domains, self.trust_chain, token_lifetime_s, self.quotas),
            UpdatePath(name),
            self.server_begin,
            UpdateToken(clock, token_lifetime_s, self.signer),
            RequestMetrics(metrics, lambda service: service in registry.services),
            self.timeout,
            self.monitor,
            self.discover,
            Connect(hosting, endpoint,
                    RemoteConnect(registry, dataplane, peer, clock, self.signer, keepalive_s,
                                  tunnel_mtu, token_lifetime_s, self.paths)),
            name="server",
        )
        self._as_daemon = Chain(ActAsDaemon(), self.server)  # a passthrough's onward requests
        self.client_begin = Begin()
        self.probe = DataplaneProbe(dataplane, timings(heal_detect_s)[1])
        self.heal = Heal(clock, self.client_begin, self.probe, on_reselect=lambda conn:
                         self.discover.suspect(conn.network_service_endpoint_name))
        self.refresh = Refresh(clock, self.client_begin, self.heal)
        self.held = Held(db)
        self.excluded = ExcludedPrefixes()
        self.client = Chain(
            self.heal,  # before begin: sees only the caller's closes, not its own reselects
            self.client_begin,
            UpdateToken(clock, token_lifetime_s, self.signer),
            self.held,
            self.excluded,  # after held: neither keeps them
            ResolvConf(),
            self.refresh,
            ActAsDaemon(),
            self.server,
            name="client",
        )
        self.server_begin.on_dropped.append(self.heal.on_server_dropped)
        self.drop_notices = DropNotices(peer, dataplane, self.server_begin, self.client_begin,
                                        self.heal)
        self.server_begin.on_dropped.append(self.drop_notices.on_dropped)
        self.netsvc = ServiceMonitor(registry, self.server_begin, self.passthrough.inner)
        self.manifests = Manifests(registry, hosting, self.policy,
                                   self.close_endpoint_connections, self.own_id)
        self.hosting = hosting
        self._restart_notices: list[tuple[str, dict[str, str]]] = []
        self.liveness = Liveness(clock, self.server_begin, self.client_begin, self.client,
                                 self.heal, self.probe, dataplane, hosting,
                                 timings(heal_detect_s)[0])
        self.rekeyer = Rekeyer(clock, self.server_begin, peer, self.signer, dataplane, metrics,
                               rekey_after_s)
        self.mesh = Mesh(hosting, registry, clock, self.client_begin.each, self.connect,
                         self.close)
        self.resolvers = Vl3Resolvers(hosting, registry, clock, self.vl3_ipam.addresses_of,
                                      dns_upstream or [])

    def signer(self) -> Signer | None:
        identity = self.identity()
        return identity.signer if identity else None

    def own_id(self) -> str:
        identity = self.identity()
        return identity.spiffe_id if identity else ""

    def trust_domains(self) -> frozenset[str]:
        identity = self.identity()
        return identity.trust_domains if identity else frozenset()

    def trust_chain(self, x5c: tuple[str, ...]) -> Trusted:
        identity = self.identity()
        if identity is None:
            raise IdentityError("this daemon has no identity to check certificates with")
        return identity.trust_chain(x5c)

    async def recover(self) -> None:
        """Start-up after a restart, in the order that loses nothing: re-attach the vWire
        devices of the last run, re-register hosted endpoints, request held connections
        again along their old paths, and only then remove devices and release addresses
        that no connection claimed."""
        await self.dataplane.restore()
        await self.hosting.start()
        restored, healing, lost = await self.restore()
        claimed = self.wire_ids()
        owners = {cid: w.owner for cid, w in self.dataplane.wires.items() if w.owner}
        swept = await self.dataplane.sweep(claimed)
        self._restart_notices = [(cid, owners[cid]) for cid in swept if cid in owners]
        released = self.ipam.sweep(claimed) + self.vl3_ipam.sweep(claimed)
        if released:
            log.info("restart: released the addresses of %d connection(s) that did not "
                     "come back", len(released))
        if restored or healing or lost or swept:
            log.info("restart: %d connection(s) restored, %d being healed, %d lost, %d stale "
                     "vWire(s) removed", restored, healing, lost, len(swept))

    def announce_restart(self) -> None:
        """Once peers can reach us again: tells each peer whose wire did not survive the
        restart, so its client reselects now rather than after the silence."""
        for conn_id, owner in self._restart_notices:
            self.drop_notices.restarted(conn_id, owner)
        self._restart_notices = []

    async def run(self, stopping: asyncio.Event) -> None:
        """The manager's periodic and watching work, until `stopping` is set: liveness,
        rekeys, function flushes, retiring supplied endpoints, service changes."""
        await asyncio.gather(self.liveness.run(stopping), self.rekeyer.run(stopping),
                             self.functions.run(stopping), self.supplies.run(stopping),
                             self.netsvc.run(stopping), self.mesh.run(stopping),
                             self.resolvers.run(stopping), self.paths.run(stopping))

    def shutdown(self) -> None:
        """Stops timers and healing; connections stay as they are for the next run."""
        self.refresh.stop()
        self.heal.stop()
        self.drop_notices.stop()
        self.timeout.stop()

    # -- operations ------------------------------------------------------------------------

    async def connect(self, service: str, labels: dict[str, str], netns: str = "",
                      ifname: str = "", client_name: str = "", caller: Caller = DAEMON,
                      timeout_s: float = 0.0, endpoint: str = "") -> Connection:
        """Requests a vWire for a local client and keeps it refreshed until closed. While
        no endpoint can serve it (SelectionError) the request is retried, as NSM's client
        does, until `timeout_s` has passed. `endpoint`: that endpoint only (a vL3 mesh
        vWire)."""
        if self.registry_only:
            raise DataplaneError("this daemon runs --registry-only: it holds services and "
                                 "endpoints but makes no vWires")
        self.policy.check("request", service, caller)
        check_local_netns(caller, netns, "interfaces")
        if caller.kind == "local" and not caller.is_root:
            self.quotas.check("connections-per-user", self.held.held_by(caller.subjects[0]),
                              caller)
        conn_id = str(uuid.uuid4())
        labels = {NODE_LABEL: self.name, **labels}  # NSM's clientinfo (the client may say)
        conn = Connection(
            id=conn_id, network_service=service, labels=labels,
            network_service_endpoint_name=endpoint,
            path=Path(index=0, path_segments=[PathSegment(
                name=client_name or f"nsc@{netns or self.name}", id=conn_id)]))
        params = {"netns": netns}
        if ifname:
            params["name"] = ifname
        request = NetworkServiceRequest(
            connection=conn,
            mechanism_preferences=[Mechanism(cls="LOCAL", type=KERNEL, parameters=params)])
        self.held.own(conn_id, caller.subjects)
        deadline = self.clock.time() + timeout_s
        pause = backoff(self.clock, RETRY_S, MAX_RETRY_S)
        try:
            while True:
                try:
                    return self.with_metrics(await self.client.request(request.clone()))
                except SelectionError as err:
                    if self.clock.time() + pause.next_s > deadline:
                        raise
                    log.info("connect %s to %s: %s; retrying in %.1f s", conn_id, service,
                             err, pause.next_s)
                await pause.wait()
        finally:
            if self.client_begin.owner(conn_id) is None:
                self.held.disown(conn_id)

    async def close(self, conn_id: str, caller: Caller = DAEMON) -> None:
        """Closes a held connection by its id (as `connect` returned it) or its manager id;
        a local user may close the connections it made, root any."""
        conn = self.client_begin.get(conn_id)
        if conn is not None:
            owner = self.held.owner(conn_id)
            if caller.kind == "local" and not caller.is_root and \
                    (not owner or owner[0] != caller.subjects[0]):
                raise PermissionDenied("close_by_owner", f"connection {conn_id} was made by "
                                       f"{owner[0] if owner else 'this daemon'}, not {caller}")
            await self.client.close(conn)
            return
        if caller.kind == "local" and not caller.is_root:
            raise PermissionDenied("close_by_owner", f"only root may close connection "
                                   f"{conn_id}: it serves another daemon's client")
        if not await self.server_begin.close_by_id(conn_id):
            raise NotFound(f"no connection with id {conn_id!r}")

    async def serve_peer(self, request: NetworkServiceRequest, caller: Caller) -> Connection:
        """A Request from another daemon (the client's host) for an endpoint we host.
        Names of our own domain arrive qualified from other domains (`svc@ours`): served
        as local names, answered as they were asked."""
        token = CALLER.set(dataclasses.replace(caller, segment=request.connection.id))
        asked = self._localize(request.connection)
        try:
            answer = await self.server.request(request)
        finally:
            CALLER.reset(token)
        answer.network_service, answer.network_service_endpoint_name = asked
        return answer

    async def close_for_peer(self, conn: Connection, caller: Caller) -> None:
        """A Close from another daemon: only for connections it created (authorize)."""
        token = CALLER.set(caller)
        self._localize(conn)
        try:
            await self.server.close(conn)
        finally:
            CALLER.reset(token)

    def _localize(self, conn: Connection) -> tuple[str, str]:
        """Drops our own domain from the connection's names; returns them as they were."""
        asked = conn.network_service, conn.network_service_endpoint_name
        if self.foreign is not None:
            conn.network_service = self.foreign.domains.localize(conn.network_service)
            conn.network_service_endpoint_name = self.foreign.domains.localize(
                conn.network_service_endpoint_name)
        return asked

    async def peer_dropped(self, conn: Connection, caller: Caller) -> str:
        """A peer daemon dropped its side of a connection we built towards it."""
        return await self.drop_notices.received(conn, caller)

    def served_per_service(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for conn in self.server_begin.each():
            counts[conn.network_service] = counts.get(conn.network_service, 0) + 1
        return counts

    def connections(self) -> list[Connection]:
        """Every vWire served here, as its outermost hop in this daemon sees it; held
        connections whose path is broken (being healed) are listed as DOWN."""
        held = {c.id: c for c in self.client_begin.connections()}
        result = []
        for conn in self.server_begin.connections():
            if conn.id in self.passthrough.inner:
                continue  # the onward part of a composed vWire: listed as part of it
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
        """Closes every connection to `endpoint` (it is being deleted), clients heal, and
        the vL3 mesh vWires it asked for."""
        await self.mesh.leave(endpoint)
        doomed = [c.id for c in self.server_begin.each()
                  if c.network_service_endpoint_name == endpoint]
        for conn_id in doomed:
            await self.server_begin.close_by_id(conn_id)
        return len(doomed)

    async def restore(self) -> tuple[int, int, int]:
        """Requests again, along its old path, every connection held before a restart:
        (restored, healing, lost). One that fails is kept, DOWN, and healed (heal.py)
        until it is back or closed; only one its user may no longer make is dropped (each
        is checked against the policy again for the local user who made it)."""
        restored = healing = lost = 0
        after_begin = Next(self.client.elements, self.client.elements.index(self.client_begin)
                           + 1)
        for request, owner in self.held.stored():
            conn_id = request.connection.id
            try:
                if owner:
                    self.policy.check("request", request.connection.network_service,
                                      _local_caller(owner))
                await self.client.request(request.clone())
                restored += 1
            except PermissionDenied as err:
                log.error("connection %s is not restored: %s", conn_id, err)
                self.held.forget(conn_id)
                lost += 1
            except NsmdError as err:
                log.warning("restoring %s on its old path failed (%s): healing it", conn_id,
                            err)
                self.client_begin.adopt(request, after_begin)
                self.excluded.keep(request.connection)
                self.heal.start(conn_id)
                healing += 1
        return restored, healing, lost

    def wire_ids(self) -> set[str]:
        """Every segment id of every connection here, live or being healed: a wire is keyed
        by the id of the hop that built it (the endpoint's, or ours towards another host)."""
        return {s.id for begin in (self.server_begin, self.client_begin)
                for c in begin.each() for s in c.path.path_segments}

    def with_metrics(self, conn: Connection) -> Connection:
        """Copies the wire's counters into the endpoint segment's metrics, as NSM does (the
        wire is ours on either end: keyed by the hop on this host that built it)."""
        if not conn.path.path_segments:
            return conn
        last = conn.path.path_segments[-1]
        wire = self.dataplane.wire_of([s.id for s in conn.path.path_segments])
        stats = self.dataplane.stats_of(wire) if wire is not None else None
        if stats is not None:
            up, down = stats["client_to_endpoint"], stats["endpoint_to_client"]
            last.metrics = {
                "tx_packets": str(up["tx_packets"]), "tx_bytes": str(up["tx_bytes"]),
                "rx_packets": str(down["tx_packets"]), "rx_bytes": str(down["tx_bytes"]),
                "drops": str(sum(up["drops"].values()) + sum(down["drops"].values())),
            }
            tunnel = stats.get("tunnel")
            if tunnel is not None and wire is not None:
                # where its datagrams go now, how often that moved, and which way
                last.metrics["tunnel_peer"] = "{}:{}".format(*tunnel["peer"])
                last.metrics["tunnel_roams"] = str(tunnel["roams"])
                last.metrics["tunnel_path"] = wire.route.describe() if wire.route else "direct"
        for segment in conn.path.path_segments:  # each hop's functions, on its segment
            segment.metrics.update(self.functions.stats(segment.id))
        return conn


def _local_caller(subjects: list[str]) -> Caller:
    """The local user a held connection was made for, from its stored subjects."""
    uid = int(subjects[0].removeprefix("unix:uid="))
    gids = tuple(int(s.removeprefix("unix:gid=")) for s in subjects[1:])
    return Caller("local", uid=uid, gids=gids)
