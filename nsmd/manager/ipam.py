"""ipam (endpoint side): a /32 pair per connection out of the endpoint's prefix.

The endpoint gets dst_ip_addrs, the client src_ip_addrs, each with a route to the other
(NSM: ipam/point2pointipam). A refresh keeps the addresses the connection already owns;
a request that carries addresses (a restore) gets them back if they are free; excluded
prefixes from the request and the endpoint spec are never handed out. Passthrough
endpoints (composition) hand out nothing: the chain's final endpoint does. vL3 endpoints
address their clients out of their subnet instead (nsmd/vl3/addresses.py).
"""

from __future__ import annotations

import dataclasses

from nsmd.hosting import Hosting
from nsmd.ipam import Pool
from nsmd.manager.chain import Next
from nsmd.manager.leases import LeasingElement
from nsmd.model import Connection, IPContext, NetworkServiceRequest, Route
from nsmd.state import StateDB


@dataclasses.dataclass(slots=True)
class Lease:
    endpoint: str
    prefix: str
    dst: str
    src: str


class Ipam(LeasingElement):
    table = "ipam"

    def __init__(self, hosting: Hosting, db: StateDB):
        super().__init__(db)
        self.hosting = hosting
        self._pools: dict[tuple[str, str], Pool] = {}
        for conn_id, doc in db.items("ipam"):
            lease = Lease(**doc)
            self.leases[conn_id] = lease
            pool = self._pool(lease.endpoint, lease.prefix)
            pool.reserve(lease.dst)
            pool.reserve(lease.src)

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        spec = self.hosting.require(conn.network_service_endpoint_name)
        if spec.builds_no_device or spec.vl3 is not None:
            # the endpoint the request goes on to addresses it; vL3: vl3/addresses.py
            return await nxt.request(request)
        ipc = conn.context.ip_context
        lease = self.leases.get(conn.id)
        fresh = lease is None or lease.endpoint != conn.network_service_endpoint_name \
            or lease.prefix != spec.ipam.prefix
        if fresh:
            if lease is not None:
                self._release(conn.id)
            pool = self._pool(conn.network_service_endpoint_name, spec.ipam.prefix)
            excluded = ipc.excluded_prefixes + spec.ipam.exclude_prefixes
            dst, src = self._recover(pool, ipc, excluded) or pool.allocate_pair(excluded)
            lease = Lease(conn.network_service_endpoint_name, spec.ipam.prefix, dst, src)
            self.leases[conn.id] = lease
        assert lease is not None
        bits = ipaddress_bits(lease.dst)
        ipc.dst_ip_addrs = [f"{lease.dst}/{bits}"]
        ipc.src_ip_addrs = [f"{lease.src}/{bits}"]
        ipc.dst_routes = [Route(prefix=f"{lease.src}/{bits}")]
        ipc.src_routes = [Route(prefix=f"{lease.dst}/{bits}")]
        return await self.request_with(request, nxt, lease, fresh)

    def _recover(self, pool: Pool, ipc: IPContext, excluded: list[str]) -> tuple[str, str] | None:
        if len(ipc.dst_ip_addrs) != 1 or len(ipc.src_ip_addrs) != 1:
            return None
        dst, src = (a.split("/")[0] for a in (ipc.dst_ip_addrs[0], ipc.src_ip_addrs[0]))
        if dst == src or not all(pool.is_free(a, excluded) for a in (dst, src)):
            return None
        pool.reserve(dst)
        pool.reserve(src)
        return dst, src

    def _release(self, conn_id: str) -> None:
        lease = self.leases.pop(conn_id, None)
        if lease is None:
            return
        pool = self._pools.get((lease.endpoint, lease.prefix))
        if pool is not None:
            pool.release(lease.dst)
            pool.release(lease.src)
        self.db.delete("ipam", conn_id)

    def _pool(self, endpoint: str, prefix: str) -> Pool:
        key = (endpoint, prefix)
        if key not in self._pools:
            self._pools[key] = Pool(prefix)
        return self._pools[key]


def ipaddress_bits(address: str) -> int:
    return 128 if ":" in address else 32
