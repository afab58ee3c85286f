"""Rekeying tunnels before their keys get old (time) or worn (packet counter).

The client's daemon starts each rekey: a fresh X25519 offer to the endpoint's daemon,
which installs the new keypair as NEXT (receive only) and answers. The client installs it
as CURRENT at once and sends a keepalive under it; the endpoint switches on that first
packet. Both keep the previous keypair for a grace period, so packets in flight during
the switch are still accepted: nothing is lost at a rotation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nsmd import defaults
from nsmd.caller import Caller
from nsmd.clock import Clock, every
from nsmd.dataplane import Dataplane, Wire, WireKind
from nsmd.errors import NotFound, NsmdError, PermissionDenied
from nsmd.identity.tokens import Signer
from nsmd.manager import mechanisms
from nsmd.manager.begin import Begin
from nsmd.metrics import Metrics
from nsmd.model import Connection
from nsmd.peer.client import PeerClient
from nsmd.tunnel_keys import ANSWER_KEYS, OFFER_KEYS, Binding, TunnelKeying

REKEY_AFTER_MESSAGES = 2**60        # WireGuard's RekeyAfterMessages
CHECK_INTERVAL_S = 0.5
log = logging.getLogger("nsmd.manager.rekey")


def due(stats: dict, rekey_after_s: float) -> bool:
    current = stats.get("tunnel", {}).get("keypairs", {}).get("current")
    return current is not None and (current["age_s"] >= rekey_after_s
                                    or current["send_counter"] >= REKEY_AFTER_MESSAGES)


class Rekeyer:
    def __init__(self, clock: Clock, served: Begin, peer: Callable[[], PeerClient | None],
                 signer: Callable[[], Signer | None], dataplane: Dataplane, metrics: Metrics,
                 rekey_after_s: float = defaults.REKEY_AFTER_S):
        self.clock = clock
        self.served = served      # the server chain's begin: the vWires to look at
        self.peer = peer
        self.signer = signer
        self.dataplane = dataplane
        self.keying = TunnelKeying(dataplane)
        self.metrics = metrics
        self.rekey_after_s = rekey_after_s

    async def run(self, stopping: asyncio.Event) -> None:
        async for _ in every(self.clock, CHECK_INTERVAL_S, stopping):
            await self.check_once()

    async def check_once(self) -> int:
        done = 0
        begin = self.served
        for conn_id in begin.ids():  # every 0.5 s: only the due ones are unpacked
            wire = self.dataplane.get(conn_id)
            if wire is None or wire.remote is None or not wire.keyed:
                continue  # rekeys start on the side that keyed the tunnel towards a peer
            if not due(self.dataplane.stats(conn_id) or {}, self.rekey_after_s):
                continue
            conn = begin.get(conn_id)
            if conn is None:
                continue  # closed while an earlier rekey of this scan was awaited
            try:
                await self.rekey(conn, wire)
                done += 1
            except NsmdError as err:
                log.warning("rekeying %s failed: %s; trying again soon", conn.id, err)
        return done

    async def rekey(self, conn: Connection, wire: Wire) -> None:
        client, signer = self.peer(), self.signer()
        if client is None or signer is None or wire.remote is None:
            return
        url, expect = wire.remote
        mine, offer = self.keying.offer(wire)
        answer = await client.call("POST", f"{url}/v1/peer/rekey", {
            "connection_id": conn.path.path_segments[conn.path.index + 1].id,
            "offer": offer}, expect=expect)
        params = mechanisms.check_tunnel_params(answer, ANSWER_KEYS, "answer")
        self.keying.accept(wire, mine, offer, params,
                           Binding(signer.spiffe_id, expect, offer["key_context"]))
        self.metrics.rekeys.inc()
        log.info("tunnel %s rekeyed (index %s)", wire.conn_id, offer["src_index"])


def answer_rekey(served: Begin, own_id: str, keying: TunnelKeying, metrics: Metrics,
                 caller: Caller, conn_id: str, offer: dict) -> dict:
    """The endpoint side of a rekey, for the peer that owns the connection: installs the
    offered keypair as NEXT, answers."""
    owner = served.owner(conn_id)
    if owner is None:
        raise NotFound(f"no connection with id {conn_id!r}")
    if owner != caller.spiffe_id:
        raise PermissionDenied("refresh_by_owner", f"connection {conn_id} belongs to "
                               f"{owner or 'this daemon'}, not {caller.spiffe_id}")
    conn = served.get(conn_id)
    wire = keying.dataplane.wire_of([s.id for s in conn.path.path_segments]) if conn else None
    if wire is None or wire.remote is not None or wire.kind == WireKind.LOCAL:
        raise NotFound(f"no tunnel vWire for connection {conn_id!r}")
    offer = mechanisms.aim_at_caller(
        mechanisms.check_tunnel_params(dict(offer), OFFER_KEYS, "offer"), caller)
    answer = keying.respond(wire, offer, Binding(caller.spiffe_id, own_id,
                                                 offer["key_context"]), rekey=True)
    metrics.rekeys.inc()
    return answer
