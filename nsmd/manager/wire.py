"""wire (endpoint side, last): the vWire itself, a TUN device on each side joined in the engine.

The client's KERNEL mechanism says where its interface goes (`netns`, `name`); the
endpoint's spec says where the endpoint's goes. A refresh finds the wire in place; a
changed address set rebuilds it. The returned mechanism names both interfaces.
"""

from __future__ import annotations

from nsmd.dataplane import Dataplane
from nsmd.errors import DataplaneError, ValidationError
from nsmd.hosting import Hosting
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, Mechanism, NetworkServiceRequest
from nsmd.model.endpoint_spec import check_ifname, check_netns, name_pattern
from nsmd.tundev import InterfaceConfig

KERNEL = "KERNEL"
DEFAULT_CLIENT_IFNAME = "nsm%d"
DEFAULT_LOCAL_MTU = 1500


def kernel_mechanism(request: NetworkServiceRequest) -> Mechanism:
    """The KERNEL mechanism the client asked for: the chosen one, else its first preference."""
    conn = request.connection
    if conn.mechanism is not None and conn.mechanism.type == KERNEL:
        return conn.mechanism
    for mech in request.mechanism_preferences:
        if mech.type == KERNEL:
            return mech
    offered = [m.type for m in request.mechanism_preferences] or ["none"]
    raise ValidationError("mechanism_preferences", "a KERNEL mechanism (the only one nsmd "
                          "offers for local vWires)", ", ".join(offered))


class LocalWire(Element):
    def __init__(self, dataplane: Dataplane, hosting: Hosting, mtu: int = DEFAULT_LOCAL_MTU):
        self.dataplane = dataplane
        self.hosting = hosting
        self.mtu = mtu

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        spec = self.hosting.spec(conn.network_service_endpoint_name)
        if spec is None:
            raise DataplaneError(f"endpoint {conn.network_service_endpoint_name!r} is not "
                                 "hosted by this daemon")
        mech = kernel_mechanism(request)
        client_ns = mech.parameters.get("netns", "")
        check_netns(client_ns, "mechanism.parameters.netns")
        asked_name = mech.parameters.get("name", "")
        if asked_name:
            check_ifname(asked_name, "mechanism.parameters.name")
        ipc = conn.context.ip_context
        mtu = spec.mtu or self.mtu
        client_cfg = InterfaceConfig(asked_name or DEFAULT_CLIENT_IFNAME, list(ipc.src_ip_addrs),
                                     [r.prefix for r in ipc.src_routes], mtu)
        endpoint_cfg = InterfaceConfig(name_pattern(spec.ifname), list(ipc.dst_ip_addrs),
                                       [r.prefix for r in ipc.dst_routes], mtu)

        wire = self.dataplane.get(conn.id)
        created = False
        if wire is not None and (wire.client.addresses != client_cfg.addresses
                                 or wire.endpoint.addresses != endpoint_cfg.addresses
                                 or wire.client.netns != client_ns):
            await self.dataplane.disconnect(conn.id)
            wire = None
        if wire is None:
            exclusive = bool(asked_name) and "%d" not in asked_name
            wire = await self.dataplane.connect_local(conn.id, client_ns, client_cfg, exclusive,
                                                      spec.netns, endpoint_cfg)
            created = True
        conn.mechanism = Mechanism(cls="LOCAL", type=KERNEL, parameters={
            "name": wire.client.ifname, "netns": client_ns,
            "endpoint_name": wire.endpoint.ifname, "endpoint_netns": spec.netns})
        conn.context.mtu = mtu
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
