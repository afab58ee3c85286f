"""NSMD_UDP, the endpoint's side when the client is on another host: the endpoint's device
joined to the tunnel socket, keyed from the client's X25519 offer for the peer daemon that
asked (tunnel_keys.py; authorize let only that peer's own offers through). A refresh finds
the wire in place; changed addresses rebuild it; a new offer (the client's daemon
restarted) keys it again."""

from __future__ import annotations

from collections.abc import Callable

from nsmd.caller import CALLER, tunnel_peer
from nsmd.dataplane import Dataplane, WireKind
from nsmd.errors import DataplaneError
from nsmd.manager.mechanisms import ETH_HEADER_BYTES, TUNNEL, check_tunnel_params, ethernet, find
from nsmd.model import Mechanism, NetworkServiceRequest
from nsmd.model.endpoint_spec import EndpointSpec, name_pattern
from nsmd.tundev import InterfaceConfig
from nsmd.tunnel_keys import OFFER_KEYS, Binding, TunnelKeying


class TunnelWire:
    def __init__(self, dataplane: Dataplane, mtu: int, keepalive_s: float,
                 own_id: Callable[[], str]):
        self.dataplane = dataplane
        self.keying = TunnelKeying(dataplane)
        self.mtu = mtu
        self.keepalive_s = keepalive_s
        self.own_id = own_id

    async def build(self, request: NetworkServiceRequest, spec: EndpointSpec) -> bool:
        """Makes (or keeps) and keys the wire; sets the connection's mechanism and MTU;
        True if it made a new one (the caller removes it if the rest of the chain fails)."""
        conn = request.connection
        mech = find(request, TUNNEL)
        assert mech is not None
        offer = check_tunnel_params(dict(mech.parameters), OFFER_KEYS)
        if not self.dataplane.has_tunnels:
            raise DataplaneError("this daemon has no tunnel socket (run it with --listen)")
        caller = tunnel_peer(CALLER.get())
        if caller is None:
            raise DataplaneError("a tunnel is keyed only for a peer daemon's request")
        ipc = conn.context.ip_context
        l2 = ethernet(conn)
        mtu = min(spec.mtu or self.mtu, self.mtu) - (ETH_HEADER_BYTES if l2 else 0)
        # frames cross the tunnel whole, so an ETHERNET side takes no vnet headers
        cfg = InterfaceConfig(name_pattern(spec.ifname), list(ipc.dst_ip_addrs),
                              [r.prefix for r in ipc.dst_routes], mtu, offload=not l2, tap=l2,
                              mac=conn.context.ethernet_context.dst_mac)
        wire = self.dataplane.get(conn.id)
        created = False
        if wire is not None and (wire.kind != WireKind.TUNNEL or wire.endpoint is None
                                 or wire.l2 != l2 or wire.endpoint.addresses != cfg.addresses):
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
        conn.mechanism = Mechanism(cls="REMOTE", type=TUNNEL,
                                   parameters={**wire.agreed, "mtu": str(mtu)})
        conn.context.mtu = mtu
        return created
