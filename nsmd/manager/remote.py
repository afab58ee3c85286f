"""The client side of a cross-host vWire: a TUN device here, keyed to the endpoint's host.

Before calling the endpoint's daemon it creates the client's device (addresses come in the
answer) and a tunnel wire, and offers an ephemeral X25519 key and the receiver index the
wire will accept (mechanisms.NSMD_UDP). The call goes only to the SPIFFE ID that
registered the endpoint, with our segment's token made out to it. From the answer it
derives the keys (tunnel_keys.py), points the wire at the peer and addresses the device.
A refresh repeats the agreed offer, so nothing changes; the first request after a restart
makes a new offer and the tunnel is keyed again. The peer daemon sees only the tunnel
mechanism, never the client's namespace. A hop that was itself reached through a tunnel
(the middle of a composed chain) relays: the incoming tunnel joined to the outgoing one
in the engine, no device in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nsmd import defaults
from nsmd.caller import CALLER, tunnel_peer
from nsmd.clock import Clock
from nsmd.dataplane import Dataplane, Wire, WireKind
from nsmd.errors import DataplaneError, NsmdError, SelectionError
from nsmd.identity.tokens import Signer
from nsmd.manager import mechanisms
from nsmd.manager.answer import check_answer
from nsmd.manager.mechanisms import ethernet
from nsmd.manager.paths import Paths
from nsmd.manager.updatetoken import sign_segment
from nsmd.model import Connection, Mechanism, NetworkServiceRequest, from_wire, to_wire
from nsmd.peer.client import PeerClient
from nsmd.registry import RegistryView
from nsmd.tundev import InterfaceConfig
from nsmd.tunnel_keys import ANSWER_KEYS, OFFER_KEYS, Binding, Ephemeral, TunnelKeying, agreed_offer

CLOSE_TIMEOUT_S = 0.5
log = logging.getLogger("nsmd.manager.remote")


def endpoint_host(registry: RegistryView, endpoint: str) -> tuple[str, str]:
    """(URL, SPIFFE ID) of the daemon hosting `endpoint`: the ID that registered it, which
    the daemon at that URL must present in mTLS."""
    nse = registry.endpoints.get(endpoint)
    if nse is None or not nse.url.startswith("https://"):
        raise SelectionError(f"endpoint {endpoint!r} has no reachable daemon url "
                             f"({nse.url if nse else 'not registered'})")
    if not nse.path_ids:
        raise SelectionError(f"endpoint {endpoint!r} has no registrant (path_ids) to expect "
                             "at its url")
    return nse.url.rstrip("/"), nse.path_ids[0]


class RemoteConnect:
    def __init__(self, registry: RegistryView, dataplane: Dataplane,
                 peer: Callable[[], PeerClient | None], clock: Clock,
                 signer: Callable[[], Signer | None], keepalive_s: float,
                 tunnel_mtu: int = defaults.TUNNEL_MTU,
                 token_lifetime_s: float = defaults.TOKEN_LIFETIME_S,
                 paths: Paths | None = None):
        self.paths = paths   # tunnels to hosts reached through the rendezvous
        self.registry = registry
        self.dataplane = dataplane
        self.keying = TunnelKeying(dataplane)
        self.peer = peer
        self.clock = clock
        self.signer = signer
        self.keepalive_s = keepalive_s
        self.tunnel_mtu = tunnel_mtu
        self.token_lifetime_s = token_lifetime_s

    def _client(self) -> tuple[PeerClient, Signer]:
        client, signer = self.peer(), self.signer()
        if client is None or signer is None or not self.dataplane.has_tunnels:
            raise SelectionError("the endpoint is on another host, and this daemon has no "
                                 "identity and tunnel socket to reach it (--listen, "
                                 "--identity-dir)")
        return client, signer

    async def request(self, request: NetworkServiceRequest) -> Connection:
        conn = request.connection
        client, signer = self._client()
        url, expect = endpoint_host(self.registry, conn.network_service_endpoint_name)
        incoming = mechanisms.find(request, mechanisms.TUNNEL)
        if incoming is not None:  # this hop was reached through a tunnel: relay it on
            return await self._relay(client, signer, url, expect, request, incoming)
        client_ns, asked = mechanisms.client_interface(request)
        wire = self.dataplane.get(conn.id)
        created = False
        l2 = ethernet(conn)
        if wire is not None and (wire.kind != WireKind.TUNNEL or wire.client is None
                                 or wire.l2 != l2):
            await self.dataplane.disconnect(conn.id)
            wire = None
        if wire is None:
            cfg = InterfaceConfig(asked or "nsm%d", [], [], self.tunnel_mtu, offload=not l2,
                                  tap=l2)
            exclusive = bool(asked) and "%d" not in asked
            wire = await self.dataplane.create_tunnel(conn.id, "client", client_ns, cfg,
                                                      exclusive, self.keepalive_s,
                                                      conn.vwire_id())
            created = True
        try:
            answer = await self._negotiate(client, signer, url, expect, request, wire)
            ipc = answer.context.ip_context
            mtu = answer.context.mtu or self.tunnel_mtu
            side = wire.client_side
            cfg = InterfaceConfig(side.ifname, list(ipc.src_ip_addrs),
                                  [r.prefix for r in ipc.src_routes], mtu, offload=not l2,
                                  tap=l2, mac=answer.context.ethernet_context.src_mac)
            if side.addresses != cfg.addresses or wire.mtu != mtu:
                await self.dataplane.configure(wire, cfg)
        except BaseException:
            if created:
                await self.dataplane.disconnect(conn.id)
            raise
        answer.mechanism = Mechanism(cls="LOCAL", type=mechanisms.KERNEL, parameters={
            "name": side.ifname, "netns": client_ns, "remote": url})
        return answer

    async def _relay(self, client: PeerClient, signer: Signer, url: str, expect: str,
                     request: NetworkServiceRequest, incoming: Mechanism) -> Connection:
        """A hop between two other hosts (a composed chain's middle): the tunnel the
        previous host offered, joined in the engine to one towards the endpoint's host."""
        conn = request.connection
        offer = mechanisms.check_tunnel_params(dict(incoming.parameters), OFFER_KEYS)
        caller = tunnel_peer(CALLER.get())
        ids = [s.id for s in conn.path.path_segments]
        if caller is None or caller.segment not in ids:
            raise DataplaneError("a tunnel is relayed only for a peer daemon's request")
        in_key = ids[ids.index(caller.segment) + 1]  # our segment where the path came in
        out = self.dataplane.get(conn.id)
        created = False
        if out is None or out.partner != in_key:
            for key in (conn.id, in_key):
                await self.dataplane.disconnect(key)
            _, out = await self.dataplane.create_relay(in_key, conn.id, self.tunnel_mtu,
                                                       self.keepalive_s, ethernet(conn),
                                                       conn.vwire_id())
            created = True
        inn = self.dataplane.get(in_key)
        assert inn is not None
        try:
            answer = await self._negotiate(client, signer, url, expect, request, out)
            if not inn.keyed or any(inn.agreed.get(k) != offer[k] for k in OFFER_KEYS):
                self.keying.respond(inn, offer, Binding(caller.spiffe_id, signer.spiffe_id,
                                                        offer["key_context"]), rekey=False)
        except BaseException:
            if created:
                await self.dataplane.disconnect(conn.id)
            raise
        mtu = min(answer.context.mtu or self.tunnel_mtu, self.tunnel_mtu)
        answer.context.mtu = mtu
        answer.mechanism = Mechanism(cls="REMOTE", type=mechanisms.TUNNEL,
                                     parameters={**inn.agreed, "mtu": str(mtu)})
        return answer

    async def _negotiate(self, client: PeerClient, signer: Signer, url: str, expect: str,
                         request: NetworkServiceRequest, wire: Wire,
                         may_reoffer: bool = True) -> Connection:
        """Keys `wire` towards the endpoint's host through its Request; returns its answer."""
        conn = request.connection
        mine: Ephemeral | None = None
        if wire.keyed:
            offer = agreed_offer(wire.agreed)
        else:
            mine, offer = self.keying.offer(wire, context=conn.id)
        outgoing = conn.clone()
        outgoing.mechanism = (Mechanism(cls="REMOTE", type=mechanisms.TUNNEL,
                                        parameters=dict(wire.agreed)) if wire.keyed else None)
        # Our segment's token is for the endpoint's host; signed with the SVID whose
        # certificate the call's TLS context carries (no await in between).
        sign_segment(outgoing.path.path_segments[outgoing.path.index], signer, expect,
                     self.clock.time(), self.token_lifetime_s)
        remote = NetworkServiceRequest(connection=outgoing, mechanism_preferences=[
            Mechanism(cls="REMOTE", type=mechanisms.TUNNEL, parameters=offer)])
        answer = check_answer(url, outgoing, from_wire(Connection, await client.call(
            "POST", f"{url}/v1/peer/request", to_wire(remote), expect=expect)),
            self.clock.time(), self.token_lifetime_s)
        if answer.mechanism is None or answer.mechanism.type != mechanisms.TUNNEL:
            raise SelectionError(f"peer {url} answered without a tunnel mechanism")
        params = mechanisms.check_tunnel_params(dict(answer.mechanism.parameters),
                                                ANSWER_KEYS)
        reached = client.reached_at(expect)
        if reached:  # through the rendezvous: its NAT's address, where its datagrams leave
            params["dst_ip"] = reached
        if mine is None and may_reoffer and any(
                params[k] != wire.agreed.get(k) for k in ANSWER_KEYS):
            # The far side keyed the tunnel anew (its daemon restarted and forgot ours):
            # we no longer hold the private half of our offer, so offer again.
            log.info("peer %s re-keyed vWire %s; making a fresh offer", url, conn.id)
            wire.keyed = False
            # ... to the connection that answer made there (its path names it).
            conn.path = answer.path
            return await self._negotiate(client, signer, url, expect, request, wire,
                                         may_reoffer=False)
        if mine is not None:
            self.keying.accept(wire, mine, offer, params,
                               Binding(signer.spiffe_id, expect, offer["key_context"]))
        wire.remote = (url, expect)
        if reached and self.paths is not None:   # behind a NAT: punch, or relay
            far = answer.path.path_segments[outgoing.path.index + 1].id \
                if len(answer.path.path_segments) > outgoing.path.index + 1 else ""
            self.paths.punching(wire, (reached, int(params["dst_port"])), far)
        return answer

    async def close(self, conn: Connection) -> None:
        """Closes the far side (best effort, briefly: it times out there anyway, and a
        reselect away from a vanished host must not wait) and removes ours."""
        wire = self.dataplane.get(conn.id)
        try:
            client = self.peer()
            if wire is not None and wire.remote is not None and client is not None:
                url, expect = wire.remote
                try:
                    await client.call("POST", f"{url}/v1/peer/close", to_wire(conn),
                                      expect=expect, timeout_s=CLOSE_TIMEOUT_S)
                except NsmdError as err:
                    log.warning("closing %s at %s failed: %s (it will time out there)",
                                conn.id, url, err)
        finally:
            await self.dataplane.disconnect(conn.id)
