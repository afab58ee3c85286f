"""wire (endpoint side, last): the vWire itself, ending in a device in the endpoint's
namespace, built by the endpoint side of the request's mechanism: one module each under
manager/mechanisms/, chosen by mechanism type from MECHANISMS (the first the request
offers, a tunnel before a local interface). The returned mechanism describes what was
built; a wire made for a request whose rest of the chain fails is removed again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from nsmd import defaults
from nsmd.dataplane import Dataplane
from nsmd.hosting import Hosting
from nsmd.manager.chain import Element, Next
from nsmd.manager.mechanisms import KERNEL, TUNNEL, ethernet, find
from nsmd.manager.mechanisms.kernel import KernelWire
from nsmd.manager.mechanisms.nsmd_udp import TunnelWire
from nsmd.model import Connection, NetworkServiceRequest
from nsmd.model.endpoint_spec import EndpointSpec
from nsmd.tundev import macs_for


class EndpointSide(Protocol):
    async def build(self, request: NetworkServiceRequest, spec: EndpointSpec) -> bool: ...


class VWire(Element):
    label = "wire"

    def __init__(self, dataplane: Dataplane, hosting: Hosting, local_mtu: int = defaults.LOCAL_MTU,
                 tunnel_mtu: int = defaults.TUNNEL_MTU, keepalive_s: float = defaults.KEEPALIVE_S,
                 own_id: Callable[[], str] = lambda: ""):
        self.dataplane = dataplane
        self.hosting = hosting
        # mechanism type -> its endpoint side, in the order they are preferred
        self.mechanisms: dict[str, EndpointSide] = {
            TUNNEL: TunnelWire(dataplane, tunnel_mtu, keepalive_s, own_id),
            KERNEL: KernelWire(dataplane, local_mtu),
        }

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        spec = self.hosting.require(conn.network_service_endpoint_name)
        if ethernet(conn):  # a MAC per side, the same on every refresh
            eth = conn.context.ethernet_context
            eth.src_mac, eth.dst_mac = macs_for(conn.id)
        kind = next((t for t in self.mechanisms if t != KERNEL and find(request, t)), KERNEL)
        created = await self.mechanisms[kind].build(request, spec)
        try:
            return await nxt.request(request)
        except BaseException:
            if created:
                await self.dataplane.disconnect(conn.id)
            raise

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            await self.dataplane.disconnect(conn.id)
