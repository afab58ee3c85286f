"""KERNEL, the endpoint's side when the client is on this host: both devices (TUN, or TAP
for ETHERNET, with a MAC per side and the same addresses), joined in the engine. A refresh
finds the wire in place; changed addresses or another namespace rebuild it."""

from __future__ import annotations

from nsmd.dataplane import Dataplane, WireKind
from nsmd.manager.mechanisms import (
    DEFAULT_CLIENT_IFNAME,
    KERNEL,
    client_interface,
    ethernet,
)
from nsmd.model import Mechanism, NetworkServiceRequest
from nsmd.model.endpoint_spec import EndpointSpec, name_pattern
from nsmd.tundev import InterfaceConfig


class KernelWire:
    def __init__(self, dataplane: Dataplane, mtu: int):
        self.dataplane = dataplane
        self.mtu = mtu

    async def build(self, request: NetworkServiceRequest, spec: EndpointSpec) -> bool:
        """Makes (or keeps) the wire; sets the connection's mechanism and MTU; True if it
        made a new one (the caller removes it if the rest of the chain fails)."""
        conn = request.connection
        client_ns, asked_name = client_interface(request)
        ipc = conn.context.ip_context
        mtu = spec.mtu or self.mtu
        l2 = ethernet(conn)
        client_cfg = InterfaceConfig(asked_name or DEFAULT_CLIENT_IFNAME, list(ipc.src_ip_addrs),
                                     [r.prefix for r in ipc.src_routes], mtu, offload=True,
                                     tap=l2, mac=conn.context.ethernet_context.src_mac)
        endpoint_cfg = InterfaceConfig(name_pattern(spec.ifname), list(ipc.dst_ip_addrs),
                                       [r.prefix for r in ipc.dst_routes], mtu, offload=True,
                                       tap=l2, mac=conn.context.ethernet_context.dst_mac)
        wire = self.dataplane.get(conn.id)
        created = False
        if wire is not None and (wire.kind != WireKind.LOCAL or wire.l2 != l2
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
        conn.mechanism = Mechanism(cls="LOCAL", type=KERNEL, parameters={
            "name": wire.client_side.ifname, "netns": client_ns,
            "endpoint_name": wire.endpoint_side.ifname, "endpoint_netns": spec.netns})
        conn.context.mtu = mtu
        return created
