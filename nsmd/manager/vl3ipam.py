"""vl3ipam (endpoint side, before ipam): addresses, routes and names on a vL3 endpoint.

A client gets an address of the endpoint's subnet, the endpoint's router address as its
peer, a route to the whole vL3 prefix and the router as its DNS server; its name
(`--client-name`, default its namespace) is served by the endpoint's resolver. A mesh
request (label vl3Peer: the asking endpoint) gets no address of ours: each side keeps its
router address and routes the other's subnet. Only the SPIFFE ID that registered the
asking endpoint may make its mesh vWires, and only for the subnet the registry gave it.
Leases are stored, so refresh, heal and restarts give a client its address back.

A DNS name belongs to its first holder on this endpoint: the peer daemon (SPIFFE ID)
whose client took it, or the local user (uid) who connected; while it holds the name,
another's client of that name gets its address but no name (and a warning is logged), so
a peer's client segment or a local --client-name cannot take over a name in use.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from collections import defaultdict
from collections.abc import Callable

from nsmd.caller import CALLER, tunnel_peer
from nsmd.errors import DataplaneError, PermissionDenied
from nsmd.hosting import Hosting
from nsmd.ipam import Pool
from nsmd.manager.chain import Next
from nsmd.manager.leases import LeasingElement
from nsmd.model import Connection, DNSConfig, NetworkServiceRequest, Route
from nsmd.registry import RegistryView
from nsmd.state import StateDB
from nsmd.vl3 import subnets

_NOT_IN_NAME = re.compile(r"[^a-z0-9-]+")
log = logging.getLogger("nsmd.manager.vl3ipam")


@dataclasses.dataclass(slots=True)
class Vl3Lease:
    endpoint: str
    subnet: str
    address: str
    name: str          # "" = no DNS name (none asked, or held by another)
    owner: str = ""    # who holds the name: a peer's SPIFFE ID, unix:uid=N, or "" (us)


def dns_name(conn: Connection) -> str:
    """The client's DNS label: its --client-name, or its namespace's name (the default
    path segment name is nsc@NAMESPACE), made a valid label."""
    segments = conn.path.path_segments
    name = segments[0].name if segments else ""
    name = name.removeprefix("nsc@").rsplit("/", 1)[-1].lower()
    return _NOT_IN_NAME.sub("-", name).strip("-")[:63]


class Vl3Ipam(LeasingElement):
    table = "vl3"

    def __init__(self, hosting: Hosting, registry: RegistryView, db: StateDB,
                 own_id: Callable[[], str],
                 local_owner: Callable[[str], list[str]] = lambda conn_id: []):
        super().__init__(db)
        self.hosting = hosting
        self.registry = registry
        self.own_id = own_id
        self.local_owner = local_owner  # a local client's id -> its user's policy subjects
        self._pools: dict[tuple[str, str], Pool] = {}
        # endpoint -> DNS name -> addresses, for its resolver; and who holds each name
        self.names: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.holders: dict[str, dict[str, str]] = defaultdict(dict)
        for conn_id, doc in db.items("vl3"):
            lease = Vl3Lease(**doc)
            self.leases[conn_id] = lease
            self._pool(lease.endpoint, lease.subnet).reserve(lease.address)
            self._name(lease)

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        endpoint = conn.network_service_endpoint_name
        spec = self.hosting.require(endpoint)
        if spec.vl3 is None:
            return await nxt.request(request)
        subnet = self.hosting.vl3_subnet(endpoint)
        if not subnet:
            raise DataplaneError(f"vL3 endpoint {endpoint!r} holds no subnet yet")
        router = subnets.router_address(subnet)
        bits = ipaddress.ip_address(router).max_prefixlen
        ipc = conn.context.ip_context
        peer = conn.labels.get(subnets.PEER_LABEL, "")
        if peer:
            theirs = self._peer_subnet(peer, conn.network_service, spec.vl3.prefix,
                                       spec.vl3.subnet_prefix_len, endpoint, subnet)
            their_router = subnets.router_address(theirs)
            ipc.src_ip_addrs = [f"{their_router}/{bits}"]
            ipc.dst_ip_addrs = [f"{router}/{bits}"]
            ipc.src_routes = [Route(prefix=f"{router}/{bits}"), Route(prefix=subnet)]
            ipc.dst_routes = [Route(prefix=f"{their_router}/{bits}"), Route(prefix=theirs)]
            return await nxt.request(request)
        lease = self.leases.get(conn.id)
        fresh = lease is None or lease.endpoint != endpoint or lease.subnet != subnet
        if fresh:
            if lease is not None:
                self._release(conn.id)
            pool = self._pool(endpoint, subnet)
            asked = [a.split("/")[0] for a in ipc.src_ip_addrs]
            kept = next((a for a in asked if pool.is_free(a)), None)  # restore, reselect
            if kept is not None:
                pool.reserve(kept)
            lease = Vl3Lease(endpoint, subnet, kept or pool.allocate(ipc.excluded_prefixes),
                             dns_name(conn), self._name_owner(conn))
            self.leases[conn.id] = lease
            if not self._name(lease):
                log.warning("vL3 endpoint %s: DNS name %r is held by %s; vWire %s (%s) gets "
                            "%s without a name", endpoint, lease.name,
                            self.holders[endpoint][lease.name] or "this daemon",
                            conn.vwire_id(), lease.owner or "this daemon", lease.address)
                lease.name = ""
        assert lease is not None
        ipc.src_ip_addrs = [f"{lease.address}/{bits}"]
        ipc.dst_ip_addrs = [f"{router}/{bits}"]
        ipc.src_routes = [Route(prefix=spec.vl3.prefix)]
        ipc.dst_routes = [Route(prefix=f"{lease.address}/{bits}")]
        conn.context.dns_context.configs = [DNSConfig(
            dns_server_ips=[router], search_domains=[conn.network_service])]
        return await self.request_with(request, nxt, lease, fresh)

    def _name_owner(self, conn: Connection) -> str:
        """Who a client's name would belong to: the peer daemon that asked for it, or the
        local user who connected (held by the client side), or "" for this daemon."""
        peer = tunnel_peer(CALLER.get())
        if peer is not None:
            return peer.spiffe_id
        subjects = self.local_owner(conn.vwire_id())
        return subjects[0] if subjects else ""

    def _name(self, lease: Vl3Lease) -> bool:
        """Serves the lease's name unless another holds it; False if another does."""
        if not lease.name:
            return True
        holders = self.holders[lease.endpoint]
        if holders.setdefault(lease.name, lease.owner) != lease.owner:
            return False
        self.names[lease.endpoint][lease.name].add(lease.address)
        return True

    def addresses_of(self, endpoint: str, name: str) -> set[str]:
        """The addresses of `endpoint`'s clients called `name` (its resolver's answers)."""
        found = self.names.get(endpoint)
        return set(found.get(name, ())) if found else set()

    def _peer_subnet(self, peer: str, service: str, prefix: str, length: int, ours: str,
                     mine: str) -> str:
        """The subnet a mesh peer routes to us: its own registered claim for the service,
        a /length of the prefix, overlapping neither ours nor any other endpoint's."""
        nse = self.registry.endpoints.get(peer)
        theirs = subnets.subnet_of(nse, service) if nse is not None else ""
        if not subnets.fits(theirs, prefix, length):
            raise PermissionDenied("vl3_peer", f"{peer!r} is no registered vL3 endpoint of "
                                   f"{service!r} holding a /{length} subnet of {prefix}")
        held = [(ours, mine)] + [(o.name, subnets.subnet_of(o, service))
                                 for o in self.registry.endpoints_of(service)
                                 if o.name not in (peer, ours)]
        for name, subnet in held:
            if subnet and subnets.overlaps(theirs, subnet):
                raise PermissionDenied("vl3_peer", f"{peer!r}'s subnet {theirs} overlaps "
                                       f"{subnet} of endpoint {name!r}")
        caller = tunnel_peer(CALLER.get())
        asking = caller.spiffe_id if caller is not None else self.own_id()
        assert nse is not None
        registrant = nse.path_ids[0] if nse.path_ids else ""
        if registrant != asking:
            raise PermissionDenied("vl3_peer", f"endpoint {peer!r} was registered by "
                                   f"{registrant or 'the registry daemon'}, not {asking}")
        return theirs

    def _release(self, conn_id: str) -> None:
        lease = self.leases.pop(conn_id, None)
        if lease is None:
            return
        pool = self._pools.get((lease.endpoint, lease.subnet))
        if pool is not None:
            pool.release(lease.address)
        names = self.names[lease.endpoint]
        if lease.name:
            names[lease.name].discard(lease.address)
            if not names[lease.name]:
                del names[lease.name]
                self.holders[lease.endpoint].pop(lease.name, None)
        self.db.delete("vl3", conn_id)

    def _pool(self, endpoint: str, subnet: str) -> Pool:
        key = (endpoint, subnet)
        if key not in self._pools:
            pool = self._pools[key] = Pool(subnet)
            pool.reserve(subnets.router_address(subnet))
        return self._pools[key]
