"""The bridge to the fast path: the only control-path package that imports nsmd.fastpath.

Dataplane is what the manager uses: it makes and removes the wires of vWires, keys and
points tunnels, installs function stages and reports counters. Behind it:
- wires.py: what is known of each wire (sides, lanes, devices);
- placement.py: the engines (one native thread per core) with their tunnel sockets, and
  which engine carries which wire;
- devices.py: the TUN/TAP devices and their records, re-attached after a restart;
- stats.py: the engines' counters per wire, per daemon and per engine;
- peers.py: the tunnels' counters per peer daemon, closed wires' included;
- forwards.py: a NAT relay's socket pairs (--relay), passing other hosts' sealed datagrams.

A local vWire is two devices, one in the client's namespace and one in the endpoint's,
joined on an engine. With `local_queues` > 1 both are multi-queue and each queue pair is
a lane on its own engine. Off by default: each extra queue costs the kernel an RCU grace
period at setup (1,000 concurrent connects take 4x longer with two queues). A tunnel
vWire is one device joined to the peer host through its engine's tunnel socket; a relay
joins two tunnels with no device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from nsmd import tundev
from nsmd.dataplane import stats as counters
from nsmd.dataplane.devices import Devices
from nsmd.dataplane.forwards import Forwards
from nsmd.dataplane.peers import PeerTally
from nsmd.dataplane.placement import Engines
from nsmd.dataplane.wires import Lane, Side, Wire, WireKind
from nsmd.errors import DataplaneError
from nsmd.fastpath.aead import AEADS
from nsmd.fastpath.stage import DIRECTIONS
from nsmd.state import StateDB

CLIENT_TO_ENDPOINT = DIRECTIONS["client_to_endpoint"]
ENDPOINT_TO_CLIENT = DIRECTIONS["endpoint_to_client"]
log = logging.getLogger("nsmd.dataplane")

__all__ = ["AEADS", "Dataplane", "Lane", "Side", "Wire", "WireKind"]


class Dataplane:
    def __init__(self, db: StateDB, engines: int = 0, local_queues: int = 1,
                 aeads: tuple[str, ...] = ("chacha20-poly1305",), advertise: str = ""):
        self.engines = Engines(engines)
        self.advertise = advertise  # the IP peers send tunnel datagrams to ("" = the socket's)
        self.aeads = aeads   # the tunnels' AEADs, preferred first (tunnel_keys.py)
        self.devices = Devices(db)
        self.local_queues = max(1, min(local_queues, len(self.engines)))
        self.wires: dict[str, Wire] = {}
        self.peer_tally = PeerTally()
        self.forwards = Forwards(self.engines)   # a relay's (--relay), not vWires of ours

    def start(self) -> None:
        self.engines.start()

    @property
    def running(self) -> bool:
        return self.engines.running

    @property
    def has_tunnels(self) -> bool:
        return bool(self.engines.udp)

    def open_udp(self, host: str, port: int) -> tuple[str, int]:
        return self.engines.open_udp(host, port)

    def tunnel_address(self, wire: Wire) -> tuple[str, int]:
        """Where the peer must send this wire's datagrams: its engine's socket, at the
        advertised IP (a port forward keeps the port numbers)."""
        host, port = self.engines.tunnel_address(wire)
        return self.advertise or host, port

    def get(self, conn_id: str) -> Wire | None:
        return self.wires.get(conn_id)

    def wire_of(self, conn_path: list[str]) -> Wire | None:
        """The wire on this host of a connection, by the segment ids from a hop onwards
        (the hop that built it keyed it by its own id)."""
        for seg_id in conn_path:
            wire = self.wires.get(seg_id)
            if wire is not None:
                return wire
        return None

    # -- making wires ----------------------------------------------------------------------

    async def connect_local(self, conn_id: str, client_ns: str, client: tundev.InterfaceConfig,
                            client_exclusive: bool, endpoint_ns: str,
                            endpoint: tundev.InterfaceConfig, single_queue: bool = False,
                            vwire: str = "") -> Wire:
        """Creates both devices (local_queues queues each, or one: a wire with function
        stages) and joins them queue by queue; on any failure nothing is left behind."""
        self._check_new(conn_id)
        queues = 1 if single_queue else self.local_queues
        client = dataclasses.replace(client, queues=queues)
        endpoint = dataclasses.replace(endpoint, queues=queues)
        (fds_c, name_c), (fds_e, name_e) = await self.devices.create_pair(
            client_ns, client, client_exclusive, endpoint_ns, endpoint)
        wire = Wire(conn_id, WireKind.LOCAL, Side(client_ns, name_c, list(client.addresses)),
                    Side(endpoint_ns, name_e, list(endpoint.addresses)), client.mtu,
                    devices=[fds_c, fds_e], offload=client.offload, l2=client.tap,
                    vwire=_differing(vwire, conn_id))
        await self._start(wire)
        log.info("vWire %s up: %s/%s <-> %s/%s (queues: %d)", wire.name, client_ns or "-",
                 name_c, endpoint_ns or "-", name_e, len(fds_c))
        return wire

    async def create_relay(self, client_key: str, endpoint_key: str, mtu: int,
                           keepalive_s: float, l2: bool = False, vwire: str = "",
                           ) -> tuple[Wire, Wire]:
        """A relay wire (no device: a tunnel in from the client's side, one out towards the
        endpoint) as two halves, each keyed like a tunnel wire. Not recorded: it holds no
        device, and its keys die with this run anyway."""
        self._check_new(client_key)
        self._check_new(endpoint_key)
        lanes = [self.engines.place_relay(keepalive_s, l2)]  # shared: one engine wire,
        stages: dict[int, list] = {}                          # one stage list
        halves = (Wire(client_key, WireKind.RELAY, None, None, mtu, lanes=lanes, side=0,
                       partner=endpoint_key, stages=stages, l2=l2,
                       vwire=_differing(vwire, client_key)),
                  Wire(endpoint_key, WireKind.RELAY, None, None, mtu, lanes=lanes, side=1,
                       partner=client_key, stages=stages, l2=l2,
                       vwire=_differing(vwire, endpoint_key)))
        for half in halves:
            self.wires[half.conn_id] = half
        log.info("vWire %s relayed on engine %d", halves[0].name, lanes[0].engine)
        return halves

    async def create_tunnel(self, conn_id: str, role: str, ns: str,
                            cfg: tundev.InterfaceConfig, exclusive: bool,
                            keepalive_s: float, vwire: str = "") -> Wire:
        """One TUN device joined to a tunnel socket, not keyed yet (role: client|endpoint)."""
        self._check_new(conn_id)
        self.engines.require_tunnels()
        fds, name = await self.devices.create(ns, cfg, exclusive)
        side = Side(ns, name, list(cfg.addresses))
        wire = Wire(conn_id, WireKind.TUNNEL, side if role == "client" else None,
                    side if role == "endpoint" else None, cfg.mtu, devices=[fds],
                    offload=cfg.offload, l2=cfg.tap, vwire=_differing(vwire, conn_id))
        await self._start(wire, keepalive_s=keepalive_s)
        log.info("vWire %s: %s side %s/%s on a tunnel", wire.name, role, ns or "-", name)
        return wire

    # -- tunnels: peer, keys, stages -------------------------------------------------------

    def send_soon(self, wire: Wire, probe: tuple[str, int] | None = None) -> None:
        """A keepalive at the engine's next tick: to the wire's peer, or (probe) to another
        address, the peer left as it is."""
        engine = self.engines.of(wire)
        if probe is None:
            engine.request_keepalive(wire.handle, wire.side)
        else:
            engine.probe(wire.handle, probe[0], probe[1], wire.side)

    def set_relay(self, wire: Wire, relay: tuple[str, int] | None) -> None:
        """The NAT relay port the wire's tunnel also hears from (None: none any more)."""
        ip, port = relay or ("0.0.0.0", 0)
        self.engines.of(wire).set_relay(wire.handle, ip, port, wire.side)

    def set_peer(self, wire: Wire, ip: str, port: int) -> None:
        self.engines.of(wire).set_peer(wire.handle, ip, port, wire.side)
        wire.peer = (ip, port)
        self.devices.record(wire)

    async def configure(self, wire: Wire, cfg: tundev.InterfaceConfig) -> None:
        """Gives a tunnel wire's device its addresses and routes (the client side learns
        them from the endpoint's answer)."""
        await self.devices.configure(wire.local_side, cfg)
        wire.mtu = cfg.mtu
        self.devices.record(wire)

    def set_owner(self, wire: Wire, spiffe_id: str, url: str, segment: str) -> None:
        if url and wire.owner != {"spiffe_id": spiffe_id, "url": url, "segment": segment}:
            wire.owner = {"spiffe_id": spiffe_id, "url": url, "segment": segment}
            self.devices.record(wire)

    def next_local_index(self, wire: Wire) -> int:
        return self.engines.of(wire).next_local_index(wire.handle)

    def takes_partial_csum(self, wire: Wire) -> bool:
        """Whether the wire's receive side can take TCP segments whose checksum the peer
        left partial: it hands TCP checksums to its kernel through vnet headers (an IP
        tunnel wire with offloads; a relay passes packets on as they came)."""
        return wire.kind == WireKind.TUNNEL and wire.offload and not wire.l2

    def install_keys(self, wire: Wire, local_index: int, remote_index: int, send: bytes,
                     recv: bytes, confirmed: bool, aead: str, csum_partial: bool = False) -> None:
        """csum_partial: the peer said it takes partial TCP checksums (its
        takes_partial_csum)."""
        engine = self.engines.of(wire)
        engine.install_keypair(wire.handle, local_index, remote_index, send, recv, confirmed,
                               wire.side, aead, csum_partial)
        wire.keyed = True
        if confirmed:
            engine.request_keepalive(wire.handle, wire.side)

    def expire_previous(self, wire: Wire, current_index: int) -> None:
        """Ends the grace period of the keypair the one with `current_index` replaced
        (nothing if a later rekey replaced that one in turn)."""
        if not wire.lanes:
            return  # removed during the grace period: nothing left to expire
        with contextlib.suppress(KeyError):
            self.engines.of(wire).expire_previous(wire.handle, current_index, wire.side)

    def set_stages(self, wire: Wire, hop: int, parts: list) -> None:
        """Installs the function stages of the hop at path position `hop` on a wire
        (several hops of a composed chain may share one wire on this host): every hop's
        parts (objects with stage_capsule()) in path order on what comes from the client,
        reversed on what goes back to it."""
        if len(wire.lanes) != 1:
            raise DataplaneError(f"vWire {wire.conn_id} has {len(wire.lanes)} queues; "
                                 "function stages need one (one thread keeps their state)")
        by_hop = wire.stages = wire.stages or {}
        if parts:
            by_hop[hop] = list(parts)
        else:
            by_hop.pop(hop, None)
        engine = self.engines.of(wire)
        ordered = [part for position in sorted(by_hop) for part in by_hop[position]]
        to_endpoint, to_client = ordered, list(reversed(ordered))
        # side 0 is the first TUN (the client's, unless this host has only the endpoint's),
        # or a relay's tunnel from the client's side
        if wire.client is not None or wire.kind == WireKind.RELAY:
            sides = ((0, CLIENT_TO_ENDPOINT, to_endpoint), (1, ENDPOINT_TO_CLIENT, to_client))
        else:
            sides = ((1, CLIENT_TO_ENDPOINT, to_endpoint), (0, ENDPOINT_TO_CLIENT, to_client))
        for side, direction, stages in sides:
            engine.set_stages(wire.handle, side, direction, stages)

    # -- removing, counting, restarting ----------------------------------------------------

    async def disconnect(self, conn_id: str) -> bool:
        """Stops the wire and removes its devices; False if there was none."""
        wire = self.wires.pop(conn_id, None)
        if wire is None:
            return False
        halves = [wire]
        if wire.partner:  # a relay: both halves go
            halves += [w for w in [self.wires.pop(wire.partner, None)] if w is not None]
        for half in halves:  # their counters stay in their peers' totals
            self.peer_tally.retire(half, self.stats_of(half))
        self.engines.remove(wire)
        self.devices.forget(conn_id)
        await self.devices.remove(wire)
        log.info("vWire %s removed", wire.name)
        return True

    def stats(self, conn_id: str) -> dict | None:
        """Counters as seen from the client: client_to_endpoint and endpoint_to_client."""
        wire = self.wires.get(conn_id)
        return self.stats_of(wire) if wire is not None else None

    def stats_of(self, wire: Wire) -> dict | None:
        return counters.wire_stats(self.engines.engines, wire)

    def peers(self) -> list[dict]:
        """Per peer daemon: tunnel address, live wires, bytes and packets each way, the
        shortest silence (peers.py)."""
        return self.peer_tally.rows((w, self.stats_of(w)) for w in self.wires.values())

    def totals(self) -> dict:
        return counters.totals(self.engines.engines, len(self.wires))

    def per_engine(self) -> list[dict]:
        return counters.per_engine(self.engines.engines)

    async def restore(self) -> list[str]:
        """Re-attaches the devices of wires recorded by an earlier run; returns their ids."""
        restored = []
        for wire in await self.devices.reattach(len(self.engines)):
            await self._start(wire, peer=wire.peer)
            restored.append(wire.conn_id)
        if restored:
            log.info("restored %d vWire(s) from the previous run", len(restored))
        return restored

    async def sweep(self, keep: set[str]) -> list[str]:
        """Removes wires no connection claims (left by connections that did not come back)."""
        orphans = [cid for cid in self.wires if cid not in keep]
        for conn_id in orphans:
            log.info("vWire %s belongs to no connection: removing it", self.wires[conn_id].name)
            await self.disconnect(conn_id)
        return orphans

    async def shutdown(self) -> None:
        """Stops the engines and lets go of the devices, which persist for the next run."""
        self.engines.stop()
        for wire in self.wires.values():
            self.engines.remove(wire)
            self.devices.release(wire)
        self.wires.clear()

    # -- internals -------------------------------------------------------------------------

    def _check_new(self, conn_id: str) -> None:
        if conn_id in self.wires:
            raise DataplaneError(f"connection {conn_id} already has a vWire")

    async def _start(self, wire: Wire, keepalive_s: float = 0.0,
                     peer: tuple[str, int] | None = None) -> None:
        try:
            self.engines.place(wire, keepalive_s, peer)
            self.devices.record(wire)
        except BaseException:
            self.engines.remove(wire)
            await self.devices.remove(wire)
            raise
        self.wires[wire.conn_id] = wire


def _differing(vwire: str, conn_id: str) -> str:
    """A wire keeps the vWire's id only where it is not its key (no second string)."""
    return "" if vwire == conn_id else vwire
