"""wire (endpoint side, last): the vWire itself, ending in a TUN device in the endpoint's
namespace.

KERNEL: the client is on this host; its TUN device is created too and the two are joined
in the engine. An ETHERNET payload gets TAP devices instead, a MAC per side and the same
/32 addresses and routes, so ARP resolves over the vWire. NSMD_UDP: the client is on
another host; the endpoint's device is joined to the tunnel socket, keyed from the
client's X25519 offer for the peer daemon that asked (tunnel_keys.py; authorize let only
that peer's own offers through). A refresh finds the wire in place; changed addresses
rebuild it; a new offer (the client's daemon restarted) keys it again. The returned
mechanism describes what was built.
"""

from __future__ import annotations

from collections.abc import Callable

from nsmd import defaults
from nsmd.caller import CALLER, tunnel_peer
from nsmd.dataplane import Dataplane
from nsmd.errors import DataplaneError
from nsmd.hosting import Hosting
from nsmd.manager import mechanisms
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, Mechanism, NetworkServiceRequest
from nsmd.model.endpoint_spec import EndpointSpec, name_pattern
from nsmd.tundev import InterfaceConfig, macs_for
from nsmd.tunnel_keys import OFFER_KEYS, Binding, TunnelKeying

DEFAULT_CLIENT_IFNAME = "nsm%d"
ETH_HEADER_BYTES = 14


def ethernet(conn: Connection) -> bool:
    """An ETHERNET (L2) vWire: TAP devices at both ends, frames in the tunnel."""
    return conn.payload == "ETHERNET"


class VWire(Element):
    label = "wire"

    def __init__(self, dataplane: Dataplane, hosting: Hosting, local_mtu: int = defaults.LOCAL_MTU,
                 tunnel_mtu: int = defaults.TUNNEL_MTU, keepalive_s: float = defaults.KEEPALIVE_S,
                 own_id: Callable[[], str] = lambda: ""):
        self.dataplane = dataplane
        self.keying = TunnelKeying(dataplane)
        self.own_id = own_id
        self.hosting = hosting
        self.local_mtu = local_mtu
        self.tunnel_mtu = tunnel_mtu
        self.keepalive_s = keepalive_s

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        spec = self.hosting.require(conn.network_service_endpoint_name)
        if ethernet(conn):  # a MAC per side, the same on every refresh
            eth = conn.context.ethernet_context
            eth.src_mac, eth.dst_mac = macs_for(conn.id)
        tunnel = mechanisms.find(request, mechanisms.TUNNEL)
        if tunnel is not None:
            created = await self._tunnel(conn, spec, tunnel)
        else:
            created = await self._local(request, spec)
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

    async def _local(self, request: NetworkServiceRequest, spec: EndpointSpec) -> bool:
        conn = request.connection
        client_ns, asked_name = mechanisms.client_interface(request)
        ipc = conn.context.ip_context
        mtu = spec.mtu or self.local_mtu
        l2 = ethernet(conn)
        client_cfg = InterfaceConfig(asked_name or DEFAULT_CLIENT_IFNAME, list(ipc.src_ip_addrs),
                                     [r.prefix for r in ipc.src_routes], mtu, offload=True,
                                     tap=l2, mac=conn.context.ethernet_context.src_mac)
        endpoint_cfg = InterfaceConfig(name_pattern(spec.ifname), list(ipc.dst_ip_addrs),
                                       [r.prefix for r in ipc.dst_routes], mtu, offload=True,
                                       tap=l2, mac=conn.context.ethernet_context.dst_mac)
        wire = self.dataplane.get(conn.id)
        created = False
        if wire is not None and (wire.kind != "local" or wire.l2 != l2
                                 or wire.client_side.addresses != client_cfg.addresses
                                 or wire.endpoint_side.addresses != endpoint_cfg.addresses
                                 or wire.client_side.netns != client_ns):
            await self.dataplane.disconnect(conn.id)
            wire = None
        if wire is None:
            exclusive = bool(asked_name) and "%d" not in asked_name
            wire = await self.dataplane.connect_local(conn.id, client_ns, client_cfg, exclusive,
                                                      spec.netns, endpoint_cfg,
                                                      single_queue=bool(spec.functions),
                                                      vwire=conn.vwire_id())
            created = True
        conn.mechanism = Mechanism(cls="LOCAL", type=mechanisms.KERNEL, parameters={
            "name": wire.client_side.ifname, "netns": client_ns,
            "endpoint_name": wire.endpoint_side.ifname, "endpoint_netns": spec.netns})
        conn.context.mtu = mtu
        return created

    async def _tunnel(self, conn: Connection, spec: EndpointSpec, mech: Mechanism) -> bool:
        offer = mechanisms.check_tunnel_params(dict(mech.parameters), OFFER_KEYS)
        if not self.dataplane.has_tunnels:
            raise DataplaneError("this daemon has no tunnel socket (run it with --listen)")
        caller = tunnel_peer(CALLER.get())
        if caller is None:
            raise DataplaneError("a tunnel is keyed only for a peer daemon's request")
        ipc = conn.context.ip_context
        l2 = ethernet(conn)
        mtu = min(spec.mtu or self.tunnel_mtu, self.tunnel_mtu) - (ETH_HEADER_BYTES if l2 else 0)
        # frames cross the tunnel whole, so an ETHERNET side takes no vnet headers
        cfg = InterfaceConfig(name_pattern(spec.ifname), list(ipc.dst_ip_addrs),
                              [r.prefix for r in ipc.dst_routes], mtu, offload=not l2, tap=l2,
                              mac=conn.context.ethernet_context.dst_mac)
        wire = self.dataplane.get(conn.id)
        created = False
        if wire is not None and (wire.kind != "tunnel" or wire.endpoint is None or wire.l2 != l2
                                 or wire.endpoint.addresses != cfg.addresses):
            await self.dataplane.disconnect(conn.id)
            wire = None
        if wire is None:
            wire = await self.dataplane.create_tunnel(conn.id, "endpoint", spec.netns, cfg,
                                                      False, self.keepalive_s, conn.vwire_id())
            created = True
        self.dataplane.set_owner(wire, caller.spiffe_id, caller.url, caller.segment)
        if not wire.keyed or any(wire.agreed.get(k) != offer[k] for k in OFFER_KEYS):
            # A new offer: the first, or the client's daemon restarted and lost our keys.
            self.keying.respond(wire, offer, Binding(caller.spiffe_id, self.own_id(),
                                                     offer["key_context"]), rekey=False)
        conn.mechanism = Mechanism(cls="REMOTE", type=mechanisms.TUNNEL,
                                   parameters={**wire.agreed, "mtu": str(mtu)})
        conn.context.mtu = mtu
        return created
