"""--relay: this daemon forwards the sealed tunnel datagrams of vWires whose two hosts
cannot reach each other directly (both behind NATs that change ports: a punched hole
never opens), as Tailscale's DERP and Nebula's relays do, without holding their keys.

A daemon asks for a relay over mTLS (POST /v1/peer/relay): the policy's `request` rule for
the service `nsmd-relay` says who may, quota-relays-per-peer how many. It gets two ports of
this host: its own end, which takes datagrams only from its TLS address, and its peer's,
which takes them only from the address it names (where the rendezvous saw the peer; a
wrong one only keeps its own vWire from working). Each end latches onto its sender, and
nothing is sent to an end before it has sent itself: the relay never aims traffic at
anyone. An allocation that carried nothing for IDLE_S is closed; its owner closes it
once a direct path took over. The relay is announced in the registry as an endpoint of
the service `nsmd-relay`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import secrets

from nsmd.caller import Caller
from nsmd.clock import Clock, every
from nsmd.dataplane import Dataplane
from nsmd.dataplane.forwards import Forwarding
from nsmd.errors import NotFound, NsmdError, PermissionDenied, ValidationError
from nsmd.model import NetworkServiceEndpoint
from nsmd.policy import Policy
from nsmd.quotas import Quotas
from nsmd.registry import RegistryView

RELAY_SERVICE = "nsmd-relay"
IDLE_S = 60.0
SWEEP_S = 10.0
ANNOUNCE_S = 20.0
log = logging.getLogger("nsmd.relay")


@dataclasses.dataclass
class Allocation:
    id: str
    owner: str          # the SPIFFE ID that asked for it
    peer: str           # the SPIFFE ID of the other end
    forwarding: Forwarding
    carried: int = 0    # datagrams passed, at the last sweep
    idle_since: float = 0.0


class Relay:
    def __init__(self, dataplane: Dataplane, registry: RegistryView, clock: Clock,
                 policy: Policy, quotas: Quotas, host: str, public_ip: str, url: str,
                 name: str):
        self.dataplane = dataplane
        self.registry = registry
        self.clock = clock
        self.policy = policy
        self.quotas = quotas
        self.host = host              # where the sockets are bound (the --listen IP)
        self.public_ip = public_ip    # what the ends send to (--advertise, else host)
        self.url = url
        self.name = f"relay-{name}"
        self.allocations: dict[str, Allocation] = {}

    def allocate(self, caller: Caller, peer: str, peer_ip: str) -> dict:
        """Two ends for a vWire between `caller` and `peer` (at `peer_ip`)."""
        self.policy.check("request", RELAY_SERVICE, caller)
        if not isinstance(peer, str) or not peer.startswith("spiffe://"):
            raise ValidationError("peer", "the SPIFFE ID of the other end", peer)
        try:
            ipaddress.IPv4Address(peer_ip)
        except (ValueError, TypeError):
            raise ValidationError("peer_ip", "an IPv4 address", peer_ip) from None
        held = sum(a.owner == caller.spiffe_id for a in self.allocations.values())
        self.quotas.check("relays-per-peer", held, caller)
        forwarding = self.dataplane.forwards.open(self.host, caller.address, peer_ip)
        allocation = Allocation(secrets.token_hex(8), caller.spiffe_id, peer, forwarding,
                                idle_since=self.clock.time())
        self.allocations[allocation.id] = allocation
        near, far = forwarding.ports
        log.info("relay %s: %s (%s) <-> %s (%s) on ports %d/%d", allocation.id,
                 caller.spiffe_id, caller.address, peer, peer_ip, near, far)
        return {"id": allocation.id, "near": f"{self.public_ip}:{near}",
                "far": f"{self.public_ip}:{far}"}

    def release(self, caller: Caller, allocation_id: str) -> dict:
        allocation = self.allocations.get(allocation_id)
        if allocation is None:
            raise NotFound(f"no relay allocation {allocation_id!r}")
        if allocation.owner != caller.spiffe_id:
            raise PermissionDenied("relay_owner", f"relay allocation {allocation_id} belongs "
                                   f"to {allocation.owner}")
        return self._close(allocation, "released by its owner")

    def stats(self) -> list[dict]:
        rows = []
        for allocation in self.allocations.values():
            counters = self.dataplane.forwards.stats(allocation.forwarding)
            rows.append({"id": allocation.id, "owner": allocation.owner,
                         "peer": allocation.peer,
                         "packets": [counters["a_to_b"]["tx_packets"],
                                     counters["b_to_a"]["tx_packets"]],
                         "latched": counters["forward"]["latched"]})
        return rows

    async def run(self, stopping: asyncio.Event) -> None:
        """Announces this relay in the registry and closes idle allocations."""
        sweeper = asyncio.ensure_future(self._sweep(stopping))
        try:
            await self._announce()
            async for _ in every(self.clock, ANNOUNCE_S, stopping):
                await self._announce()
        finally:
            await sweeper
            for allocation in list(self.allocations.values()):
                self._close(allocation, "relay stopping")

    async def _announce(self) -> None:
        try:
            await self.registry.register_endpoint(NetworkServiceEndpoint(
                name=self.name, network_service_names=[RELAY_SERVICE], url=self.url,
                expiration_time=self.clock.time() + 3 * ANNOUNCE_S))
        except NsmdError as err:
            log.warning("relay: announcing %s in the registry failed: %s", self.name, err)

    async def _sweep(self, stopping: asyncio.Event) -> None:
        async for _ in every(self.clock, SWEEP_S, stopping):
            now = self.clock.time()
            for allocation in list(self.allocations.values()):
                counters = self.dataplane.forwards.stats(allocation.forwarding)
                carried = counters["a_to_b"]["rx_packets"] + counters["b_to_a"]["rx_packets"]
                if carried != allocation.carried:
                    allocation.carried, allocation.idle_since = carried, now
                elif now - allocation.idle_since >= IDLE_S:
                    self._close(allocation, f"idle for {IDLE_S:.0f} s")

    def _close(self, allocation: Allocation, why: str) -> dict:
        self.allocations.pop(allocation.id, None)
        final = self.dataplane.forwards.close(allocation.forwarding)
        log.info("relay %s closed (%s): %d/%d datagrams passed", allocation.id, why,
                 final["a_to_b"]["tx_packets"], final["b_to_a"]["tx_packets"])
        return {"released": allocation.id}
