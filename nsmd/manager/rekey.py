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

from nsmd.dataplane import Dataplane, Wire
from nsmd.errors import NotFound, NsmdError
from nsmd.manager import mechanisms
from nsmd.manager.build import Manager
from nsmd.manager.remote import peer_url
from nsmd.metrics import Metrics
from nsmd.tunnel_keys import Ephemeral, decode_public

REKEY_AFTER_S = 120.0               # WireGuard's RekeyAfterTime
REKEY_AFTER_MESSAGES = 2**60        # WireGuard's RekeyAfterMessages
PREVIOUS_GRACE_S = 10.0             # how long the old keypair still opens packets
CHECK_INTERVAL_S = 0.5
log = logging.getLogger("nsmd.manager.rekey")


def due(stats: dict, rekey_after_s: float) -> bool:
    current = stats.get("tunnel", {}).get("keypairs", {}).get("current")
    return current is not None and (current["age_s"] >= rekey_after_s
                                    or current["send_counter"] >= REKEY_AFTER_MESSAGES)


class Rekeyer:
    def __init__(self, manager: Manager, dataplane: Dataplane, metrics: Metrics,
                 rekey_after_s: float = REKEY_AFTER_S):
        self.manager = manager
        self.dataplane = dataplane
        self.metrics = metrics
        self.rekey_after_s = rekey_after_s

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), CHECK_INTERVAL_S)
            except TimeoutError:
                await self.check_once()

    async def check_once(self) -> int:
        done = 0
        for conn in self.manager.server_begin.peek():
            wire = self.dataplane.get(conn.id)
            if wire is None or wire.kind != "tunnel" or wire.client is None or not wire.keyed:
                continue
            stats = self.dataplane.stats(conn.id) or {}
            if not due(stats, self.rekey_after_s):
                continue
            try:
                await self.rekey(conn.network_service_endpoint_name, wire,
                                 conn.path.path_segments[conn.path.index + 1].id)
                done += 1
            except NsmdError as err:
                log.warning("rekeying %s failed: %s; trying again soon", conn.id, err)
        return done

    async def rekey(self, endpoint: str, wire: Wire, peer_conn_id: str) -> None:
        client = self.manager.peer()
        if client is None:
            return
        url = peer_url(self.manager.registry, endpoint)
        mine = Ephemeral()
        index = self.dataplane.next_local_index(wire)
        offer = {**{k: wire.agreed[k] for k in mechanisms.OFFER_KEYS},
                 "src_public_key": mine.public_b64, "src_index": str(index)}
        answer = await client.call("POST", f"{url}/v1/peer/rekey",
                                   {"connection_id": peer_conn_id, "offer": offer})
        params = mechanisms.check_tunnel_params(answer, ("dst_public_key", "dst_index"),
                                                "answer")
        keys = mine.derive(params["dst_public_key"], mine.public,
                           decode_public(params["dst_public_key"]), offer["key_context"])
        self.dataplane.install_keys(wire, index, int(params["dst_index"]),
                                    send=keys.initiator_to_responder,
                                    recv=keys.responder_to_initiator, confirmed=True)
        wire.agreed = {**wire.agreed, **offer, **{k: params[k] for k in params}}
        _expire_later(self.dataplane, wire)
        self.metrics.rekeys.inc()
        log.info("tunnel %s rekeyed (index %d)", wire.conn_id, index)


def answer_rekey(manager: Manager, dataplane: Dataplane, metrics: Metrics, conn_id: str,
                 offer: dict) -> dict:
    """The endpoint side of a rekey: installs the offered keypair as NEXT, answers."""
    conn = manager.server_begin.get(conn_id)
    wire = dataplane.get(conn.path.path_segments[-1].id) if conn else None
    if wire is None or wire.kind != "tunnel" or wire.endpoint is None:
        raise NotFound(f"no tunnel vWire for connection {conn_id!r}")
    offer = mechanisms.check_tunnel_params(dict(offer), mechanisms.OFFER_KEYS, "offer")
    mine = Ephemeral()
    keys = mine.derive(offer["src_public_key"], decode_public(offer["src_public_key"]),
                       mine.public, offer["key_context"])
    index = dataplane.next_local_index(wire)
    dataplane.install_keys(wire, index, int(offer["src_index"]),
                           send=keys.responder_to_initiator, recv=keys.initiator_to_responder,
                           confirmed=False)
    answer = {"dst_public_key": mine.public_b64, "dst_index": str(index)}
    wire.agreed = {**wire.agreed, **{k: offer[k] for k in mechanisms.OFFER_KEYS}, **answer}
    _expire_later(dataplane, wire)
    metrics.rekeys.inc()
    return answer


def _expire_later(dataplane: Dataplane, wire: Wire) -> None:
    asyncio.get_running_loop().call_later(PREVIOUS_GRACE_S, dataplane.expire_previous, wire)
