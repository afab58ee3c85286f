"""The client side of a cross-host vWire: a TUN device here, keyed to the endpoint's host.

Before calling the endpoint's daemon it creates the client's device (addresses come in the
answer) and a tunnel wire, and offers an ephemeral X25519 key and the receiver index the
wire will accept (mechanisms.NSMD_UDP). From the answer it derives the keys, points the
wire at the peer and addresses the device. A refresh repeats the agreed offer, so nothing
changes; the first request after a restart makes a new offer and the tunnel is keyed
again. The peer daemon sees only the tunnel mechanism, never the client's namespace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from nsmd.dataplane import Dataplane, Wire
from nsmd.errors import NsmdError, SelectionError
from nsmd.manager import mechanisms
from nsmd.model import Connection, Mechanism, NetworkServiceRequest, from_wire, to_wire
from nsmd.peer.client import PeerClient
from nsmd.registry import RegistryView
from nsmd.tundev import InterfaceConfig
from nsmd.tunnel_keys import Ephemeral, decode_public

log = logging.getLogger("nsmd.manager.remote")


def peer_url(registry: RegistryView, endpoint: str) -> str:
    nse = registry.endpoints.get(endpoint)
    if nse is None or not nse.url.startswith("https://"):
        raise SelectionError(f"endpoint {endpoint!r} has no reachable daemon url "
                             f"({nse.url if nse else 'not registered'})")
    return nse.url.rstrip("/")


class RemoteConnect:
    def __init__(self, registry: RegistryView, dataplane: Dataplane,
                 peer: Callable[[], PeerClient | None], keepalive_s: float,
                 tunnel_mtu: int = mechanisms.DEFAULT_TUNNEL_MTU):
        self.registry = registry
        self.dataplane = dataplane
        self.peer = peer
        self.keepalive_s = keepalive_s
        self.tunnel_mtu = tunnel_mtu

    def _client(self) -> PeerClient:
        client = self.peer()
        if client is None or not self.dataplane.has_tunnels:
            raise SelectionError("the endpoint is on another host, and this daemon has no "
                                 "identity and tunnel socket to reach it (--listen, "
                                 "--identity-dir)")
        return client

    async def request(self, request: NetworkServiceRequest) -> Connection:
        conn = request.connection
        client = self._client()
        url = peer_url(self.registry, conn.network_service_endpoint_name)
        client_ns, asked = mechanisms.client_interface(request)

        wire = self.dataplane.get(conn.id)
        created = False
        if wire is not None and (wire.kind != "tunnel" or wire.client is None):
            await self.dataplane.disconnect(conn.id)
            wire = None
        if wire is None:
            cfg = InterfaceConfig(asked or "nsm%d", [], [], self.tunnel_mtu, offload=True)
            exclusive = bool(asked) and "%d" not in asked
            wire = await self.dataplane.create_tunnel(conn.id, "client", client_ns, cfg,
                                                      exclusive, self.keepalive_s)
            created = True
        try:
            return await self._negotiate(client, url, request, wire, client_ns)
        except BaseException:
            if created:
                await self.dataplane.disconnect(conn.id)
            raise

    async def _negotiate(self, client: PeerClient, url: str, request: NetworkServiceRequest,
                         wire: Wire, client_ns: str, may_reoffer: bool = True) -> Connection:
        conn = request.connection
        mine: Ephemeral | None = None
        if wire.keyed:
            offer = {k: wire.agreed[k] for k in mechanisms.OFFER_KEYS}
        else:
            mine = Ephemeral()
            host, port = self.dataplane.tunnel_address(wire)
            offer = {"src_ip": host, "src_port": str(port), "src_public_key": mine.public_b64,
                     "src_index": str(self.dataplane.next_local_index(wire)),
                     "key_context": conn.id}
        outgoing = conn.clone()
        outgoing.mechanism = (Mechanism(cls="REMOTE", type=mechanisms.TUNNEL,
                                        parameters=dict(wire.agreed)) if wire.keyed else None)
        remote = NetworkServiceRequest(connection=outgoing, mechanism_preferences=[
            Mechanism(cls="REMOTE", type=mechanisms.TUNNEL, parameters=offer)])
        answer = from_wire(Connection, await client.call(
            "POST", f"{url}/v1/peer/request", to_wire(remote)))
        if answer.mechanism is None or answer.mechanism.type != mechanisms.TUNNEL:
            raise SelectionError(f"peer {url} answered without a tunnel mechanism")
        params = mechanisms.check_tunnel_params(dict(answer.mechanism.parameters),
                                                mechanisms.ANSWER_KEYS)
        if mine is None and may_reoffer and any(
                params[k] != wire.agreed.get(k) for k in mechanisms.ANSWER_KEYS):
            # The far side keyed the tunnel anew (its daemon restarted and forgot ours):
            # we no longer hold the private half of our offer, so offer again.
            log.info("peer %s re-keyed vWire %s; making a fresh offer", url, conn.id)
            wire.keyed = False
            return await self._negotiate(client, url, request, wire, client_ns,
                                         may_reoffer=False)
        if mine is not None:
            keys = mine.derive(params["dst_public_key"], mine.public,
                               decode_public(params["dst_public_key"]), offer["key_context"])
            self.dataplane.set_peer(wire, params["dst_ip"], int(params["dst_port"]))
            self.dataplane.install_keys(wire, int(offer["src_index"]), int(params["dst_index"]),
                                        send=keys.initiator_to_responder,
                                        recv=keys.responder_to_initiator, confirmed=True)
            wire.agreed = {**offer, **{k: params[k] for k in mechanisms.ANSWER_KEYS}}
        ipc = answer.context.ip_context
        mtu = answer.context.mtu or self.tunnel_mtu
        side = wire.client_side
        cfg = InterfaceConfig(side.ifname, list(ipc.src_ip_addrs),
                              [r.prefix for r in ipc.src_routes], mtu, offload=True)
        if side.addresses != cfg.addresses or wire.mtu != mtu:
            await self.dataplane.configure(wire, cfg)
        answer.mechanism = Mechanism(cls="LOCAL", type=mechanisms.KERNEL, parameters={
            "name": side.ifname, "netns": client_ns, "remote": url})
        return answer

    async def close(self, conn: Connection) -> None:
        """Closes the far side (best effort: it times out anyway) and removes ours."""
        try:
            with contextlib.suppress(SelectionError):
                url = peer_url(self.registry, conn.network_service_endpoint_name)
                client = self._client()
                try:
                    await client.call("POST", f"{url}/v1/peer/close", to_wire(conn))
                except NsmdError as err:
                    log.warning("closing %s at %s failed: %s (it will time out there)",
                                conn.id, url, err)
        finally:
            await self.dataplane.disconnect(conn.id)
