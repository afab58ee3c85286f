"""The bridge to the fast path: the only control-path module that imports nsmd.fastpath.

Owns the packet engines, the host's tunnel sockets and the TUN devices of every vWire.
There is one engine (one native thread) per core, each with its own tunnel socket
(tunnel_port + k).

- A local vWire is two TUN devices, one in the client's namespace and one in the
  endpoint's, joined on the least loaded engine. With `local_queues` > 1 both are
  multi-queue and lane k joins queue k of both on engine k: the kernel keeps each flow on
  one queue, so one vWire's flows spread over the cores in order. Off by default: each
  extra queue costs the kernel an RCU grace period at setup (1,000 concurrent connects
  take 4x longer with two queues).
- A tunnel vWire is one TUN device joined to the peer host through the tunnel socket of
  the engine it lives on; its keys, counters and replay window stay on that one thread.

Devices are persistent and each wire is recorded in the state database, so a restarted
daemon re-attaches to them (restore) and removes those nobody claims (sweep). Tunnel keys
are never stored: a restored tunnel is keyed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time

from nsmd import netns, tundev
from nsmd.errors import DataplaneError
from nsmd.fastpath.engine import Engine
from nsmd.fastpath.stage import DIRECTIONS
from nsmd.state import StateDB

UDP_BUFFER_BYTES = 7 << 20  # an overflowing socket buffer is the tunnels' main loss
# Linux socket options Python 3.11 does not name (asm-generic/socket.h, linux/udp.h).
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
UDP_GRO = 104
CLIENT_TO_ENDPOINT = DIRECTIONS["client_to_endpoint"]
ENDPOINT_TO_CLIENT = DIRECTIONS["endpoint_to_client"]
log = logging.getLogger("nsmd.dataplane")


@dataclasses.dataclass(slots=True)
class Side:
    netns: str      # "" = the daemon's own namespace
    ifname: str     # the device's actual name
    addresses: list[str]


@dataclasses.dataclass(slots=True)
class Lane:
    engine: int     # index of the engine (thread, tunnel socket)
    handle: int     # the engine's handle of this wire


@dataclasses.dataclass(slots=True)
class Wire:
    conn_id: str
    kind: str                       # "local" or "tunnel"
    client: Side | None             # the sides on this host; a tunnel wire has one
    endpoint: Side | None
    mtu: int
    peer: tuple[str, int] | None = None
    lanes: list[Lane] = dataclasses.field(default_factory=list)
    devices: list[list[int]] = dataclasses.field(default_factory=list)  # fds per device
    created: float = dataclasses.field(default_factory=time.monotonic)
    offload: bool = False           # vnet headers + TSO on the devices
    l2: bool = False                # ETHERNET: TAP devices, Ethernet frames
    keyed: bool = False             # keys installed by this run of the daemon
    agreed: dict = dataclasses.field(default_factory=dict)  # tunnel parameters in use
    stages: dict[int, list] = dataclasses.field(default_factory=dict)  # path position -> parts
    remote: tuple[str, str] | None = None  # the far daemon (URL, SPIFFE ID) we keyed towards
    side: int = 0                   # a relay half: 0 towards the client, 1 towards the endpoint
    partner: str = ""               # a relay half: the key of the other half

    @property
    def engine(self) -> int:
        return self.lanes[0].engine

    @property
    def handle(self) -> int:
        return self.lanes[0].handle

    @property
    def client_side(self) -> Side:
        assert self.client is not None, "not a wire with the client on this host"
        return self.client

    @property
    def endpoint_side(self) -> Side:
        assert self.endpoint is not None, "not a wire with the endpoint on this host"
        return self.endpoint

    @property
    def local_side(self) -> Side:
        side = self.client or self.endpoint
        assert side is not None
        return side

    def record(self) -> dict:
        return {"kind": self.kind, "mtu": self.mtu, "peer": self.peer, "offload": self.offload,
                "queues": len(self.lanes) or 1, "tap": self.l2,
                "client": dataclasses.asdict(self.client) if self.client else None,
                "endpoint": dataclasses.asdict(self.endpoint) if self.endpoint else None}


class Dataplane:
    def __init__(self, db: StateDB, engines: int = 0, local_queues: int = 1):
        self.db = db
        self.engines = [Engine() for _ in range(engines or os.cpu_count() or 1)]
        self.local_queues = max(1, min(local_queues, len(self.engines)))
        self.wires: dict[str, Wire] = {}
        self.udp: list[socket.socket] = []
        self._load = [0] * len(self.engines)   # lanes per engine

    def start(self) -> None:
        for engine in self.engines:
            engine.start()

    @property
    def running(self) -> bool:
        return all(engine.is_running for engine in self.engines)

    @property
    def has_tunnels(self) -> bool:
        return bool(self.udp)

    def open_udp(self, host: str, port: int) -> tuple[str, int]:
        """Binds one tunnel socket per engine (port, port + 1, ...); returns the first."""
        for k, engine in enumerate(self.engines):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for option in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
                with contextlib.suppress(OSError):  # needs CAP_NET_ADMIN; fine without
                    sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)
            with contextlib.suppress(OSError):  # coalesced receives; the engine takes both
                sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
            try:
                sock.bind((host, port + k if port else 0))
            except OSError as err:
                sock.close()
                raise DataplaneError(f"cannot bind tunnel socket {k} to {host}:{port + k}: "
                                     f"{err.strerror}") from None
            engine.set_udp_socket(sock.fileno())
            self.udp.append(sock)
        return self.udp[0].getsockname()[:2]

    def tunnel_address(self, wire: Wire) -> tuple[str, int]:
        """Where the peer must send this wire's datagrams (its engine's socket)."""
        if not self.udp:
            raise DataplaneError("this daemon has no tunnel socket (run it with --listen)")
        return self.udp[wire.engine].getsockname()[:2]

    def get(self, conn_id: str) -> Wire | None:
        return self.wires.get(conn_id)

    # -- local wires -----------------------------------------------------------------------

    async def connect_local(self, conn_id: str, client_ns: str, client: tundev.InterfaceConfig,
                            client_exclusive: bool, endpoint_ns: str,
                            endpoint: tundev.InterfaceConfig, single_queue: bool = False,
                            ) -> Wire:
        """Creates both devices (local_queues queues each, or one: a wire with function
        stages) and joins them queue by queue; on any failure nothing is left behind."""
        self._check_new(conn_id)
        queues = 1 if single_queue else self.local_queues
        client = dataclasses.replace(client, queues=queues)
        endpoint = dataclasses.replace(endpoint, queues=queues)
        # Both sides at once: each is a few netlink round trips on its own thread.
        made = await asyncio.gather(
            netns.run_in(client_ns, tundev.create, client, client_exclusive),
            netns.run_in(endpoint_ns, tundev.create, endpoint, False), return_exceptions=True)
        created = [r for r in made if not isinstance(r, BaseException)]
        failed = [r for r in made if isinstance(r, BaseException)]
        if failed:
            for fds, _ in created:
                await asyncio.to_thread(tundev.remove, fds)
            raise failed[0]
        (fds_c, name_c), (fds_e, name_e) = created
        wire = Wire(conn_id, "local", Side(client_ns, name_c, list(client.addresses)),
                    Side(endpoint_ns, name_e, list(endpoint.addresses)), client.mtu,
                    devices=[fds_c, fds_e], offload=client.offload, l2=client.tap)
        await self._start(wire)
        log.info("vWire %s up: %s/%s <-> %s/%s (%d queues)", conn_id, client_ns or "-",
                 name_c, endpoint_ns or "-", name_e, len(fds_c))
        return wire

    # -- relay wires -----------------------------------------------------------------------

    async def create_relay(self, client_key: str, endpoint_key: str, mtu: int,
                           keepalive_s: float, l2: bool = False) -> tuple[Wire, Wire]:
        """A relay wire (no device: a tunnel in from the client's side, one out towards the
        endpoint) as two halves, each keyed like a tunnel wire. Not recorded: it holds no
        device, and its keys die with this run anyway."""
        self._check_new(client_key)
        self._check_new(endpoint_key)
        if not self.udp:
            raise DataplaneError("this daemon has no tunnel socket (run it with --listen)")
        least = min(range(len(self.engines)), key=self._load.__getitem__)
        lane = Lane(least, self.engines[least].add_relay_wire(keepalive_s, l2))
        self._load[least] += 1
        lanes: list[Lane] = [lane]           # shared: one engine wire,
        stages: dict[int, list] = {}          # one stage list
        halves = (Wire(client_key, "relay", None, None, mtu, lanes=lanes, side=0,
                       partner=endpoint_key, stages=stages, l2=l2),
                  Wire(endpoint_key, "relay", None, None, mtu, lanes=lanes, side=1,
                       partner=client_key, stages=stages, l2=l2))
        for half in halves:
            self.wires[half.conn_id] = half
        log.info("relay vWire %s <-> %s on engine %d", client_key, endpoint_key, least)
        return halves

    # -- tunnel wires ----------------------------------------------------------------------

    async def create_tunnel(self, conn_id: str, role: str, ns: str,
                            cfg: tundev.InterfaceConfig, exclusive: bool,
                            keepalive_s: float) -> Wire:
        """One TUN device joined to a tunnel socket, not keyed yet (role: client|endpoint)."""
        self._check_new(conn_id)
        if not self.udp:
            raise DataplaneError("this daemon has no tunnel socket (run it with --listen)")
        fds, name = await netns.run_in(ns, tundev.create, cfg, exclusive)
        side = Side(ns, name, list(cfg.addresses))
        wire = Wire(conn_id, "tunnel", side if role == "client" else None,
                    side if role == "endpoint" else None, cfg.mtu, devices=[fds],
                    offload=cfg.offload, l2=cfg.tap)
        await self._start(wire, keepalive_s=keepalive_s)
        log.info("tunnel vWire %s: %s/%s (%s side)", conn_id, ns or "-", name, role)
        return wire

    def set_peer(self, wire: Wire, ip: str, port: int) -> None:
        self._engine(wire).set_peer(wire.handle, ip, port, wire.side)
        wire.peer = (ip, port)
        self._record(wire)

    async def configure(self, wire: Wire, cfg: tundev.InterfaceConfig) -> None:
        """Gives a tunnel wire's device its addresses and routes (the client side learns
        them from the endpoint's answer)."""
        side = wire.local_side
        await netns.run_in(side.netns, tundev.configure, side.ifname, cfg)
        side.addresses = list(cfg.addresses)
        wire.mtu = cfg.mtu
        self._record(wire)

    def next_local_index(self, wire: Wire) -> int:
        return self._engine(wire).next_local_index(wire.handle)

    def install_keys(self, wire: Wire, local_index: int, remote_index: int, send: bytes,
                     recv: bytes, confirmed: bool) -> None:
        engine = self._engine(wire)
        engine.install_keypair(wire.handle, local_index, remote_index, send, recv, confirmed,
                               wire.side)
        wire.keyed = True
        if confirmed:
            engine.request_keepalive(wire.handle, wire.side)

    def wire_of(self, conn_path: list[str]) -> Wire | None:
        """The wire on this host of a connection, by the segment ids from a hop onwards
        (the hop that built it keyed it by its own id)."""
        for seg_id in conn_path:
            wire = self.wires.get(seg_id)
            if wire is not None:
                return wire
        return None

    def set_stages(self, wire: Wire, hop: int, parts: list) -> None:
        """Installs the function stages of the hop at path position `hop` on a wire
        (several hops of a composed chain may share one wire on this host): every hop's
        parts (objects with stage_capsule()) in path order on what comes from the client,
        reversed on what goes back to it."""
        if len(wire.lanes) != 1:
            raise DataplaneError(f"vWire {wire.conn_id} has {len(wire.lanes)} queues; "
                                 "function stages need one (one thread keeps their state)")
        if parts:
            wire.stages[hop] = list(parts)
        else:
            wire.stages.pop(hop, None)
        engine = self._engine(wire)
        ordered = [part for position in sorted(wire.stages) for part in wire.stages[position]]
        to_endpoint, to_client = ordered, list(reversed(ordered))
        # side 0 is the first TUN (the client's, unless this host has only the endpoint's),
        # or a relay's tunnel from the client's side
        if wire.client is not None or wire.kind == "relay":
            sides = ((0, CLIENT_TO_ENDPOINT, to_endpoint), (1, ENDPOINT_TO_CLIENT, to_client))
        else:
            sides = ((1, CLIENT_TO_ENDPOINT, to_endpoint), (0, ENDPOINT_TO_CLIENT, to_client))
        for side, direction, stages in sides:
            engine.set_stages(wire.handle, side, direction, stages)

    def expire_previous(self, wire: Wire) -> None:
        if not wire.lanes:
            return  # removed during the grace period: nothing left to expire
        with contextlib.suppress(KeyError):
            self._engine(wire).expire_previous(wire.handle, wire.side)

    # -- common ----------------------------------------------------------------------------

    async def disconnect(self, conn_id: str) -> bool:
        """Stops the wire and removes its devices; False if there was none."""
        wire = self.wires.pop(conn_id, None)
        if wire is None:
            return False
        if wire.partner:  # a relay: both halves go
            self.wires.pop(wire.partner, None)
        self._stop_lanes(wire)
        self.db.delete("wires", conn_id)
        await self._remove_devices(wire)
        log.info("vWire %s removed", conn_id)
        return True

    def stats(self, conn_id: str) -> dict | None:
        """Counters as seen from the client: client_to_endpoint and endpoint_to_client."""
        wire = self.wires.get(conn_id)
        if wire is None or not wire.lanes:
            return None
        raw: dict = {}
        dead = [False, False]
        for lane in wire.lanes:
            part = self.engines[lane.engine].wire_stats(lane.handle)
            dead = [dead[i] or part["dead"][i] for i in (0, 1)]
            part.pop("dead")
            tunnels = part.pop("tunnel", None), part.pop("tunnel2", None)
            if tunnels[wire.side] is not None:  # a relay half: its own tunnel
                raw["tunnel"] = tunnels[wire.side]
            _add_into(raw, part)
        # a_to_b counts what fd[0] sent: the client's TUN, or the endpoint's on its host.
        forward, backward = raw["a_to_b"], raw["b_to_a"]
        dead_by_side = {"client": dead[0], "endpoint": dead[1]}
        if wire.kind == "tunnel" and wire.endpoint is not None:
            forward, backward = backward, forward
            dead_by_side = {"client": False, "endpoint": dead[0]}
        result = {"client_to_endpoint": forward, "endpoint_to_client": backward,
                  "dead": dead_by_side}
        if "tunnel" in raw:
            result["tunnel"] = raw["tunnel"]
            result["age_s"] = time.monotonic() - wire.created
        return result

    def totals(self) -> dict:
        """Counters summed over the engines (for /metrics and status)."""
        total: dict = {}
        for engine in self.engines:
            _add_into(total, engine.totals())
        total["lanes"] = total.pop("wires", 0)
        total["wires"] = len(self.wires)
        return total

    def per_engine(self) -> list[dict]:
        """Lanes and packets per engine: how the load spreads over the cores."""
        return [{"lanes": t["wires"], "rx_packets": t["rx_packets"],
                 "tx_packets": t["tx_packets"]}
                for t in (engine.totals() for engine in self.engines)]

    async def restore(self) -> list[str]:
        """Re-attaches the devices of wires recorded by an earlier run; returns their ids."""
        restored = []
        for conn_id, doc in list(self.db.items("wires")):
            sides = [Side(**doc[k]) if doc.get(k) else None for k in ("client", "endpoint")]
            peer = tuple(doc["peer"]) if doc.get("peer") else None
            wire = Wire(conn_id, doc.get("kind", "local"), sides[0], sides[1], doc["mtu"],
                        peer=peer, offload=doc.get("offload", False), l2=doc.get("tap", False))
            queues = doc.get("queues", 1)
            try:
                for side in (s for s in sides if s is not None):
                    wire.devices.append(await netns.run_in(
                        side.netns, tundev.attach, side.ifname, wire.offload, queues, wire.l2))
                if queues > len(self.engines):
                    raise DataplaneError(f"it has {queues} queues, this run only "
                                         f"{len(self.engines)} engines")
            except DataplaneError as err:
                log.warning("vWire %s cannot be restored (%s): removing what is left", conn_id,
                            err)
                for fds in wire.devices:
                    await asyncio.to_thread(tundev.remove, fds)
                self.db.delete("wires", conn_id)
                await self._remove_by_name(wire)
                continue
            await self._start(wire, peer=peer)
            restored.append(conn_id)
        if restored:
            log.info("restored %d vWire(s) from the previous run", len(restored))
        return restored

    async def sweep(self, keep: set[str]) -> list[str]:
        """Removes wires no connection claims (left by connections that did not come back)."""
        orphans = [cid for cid in self.wires if cid not in keep]
        for conn_id in orphans:
            log.info("vWire %s belongs to no connection: removing it", conn_id)
            await self.disconnect(conn_id)
        return orphans

    async def shutdown(self) -> None:
        """Stops the engines and lets go of the devices, which persist for the next run."""
        for engine in self.engines:
            engine.stop()
        for wire in self.wires.values():
            self._stop_lanes(wire)
            for fds in wire.devices:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self.wires.clear()
        for sock in self.udp:
            sock.close()
        self.udp = []

    # -- internals -------------------------------------------------------------------------

    def _record(self, wire: Wire) -> None:
        if wire.kind != "relay":  # relays hold no device to re-attach after a restart
            self.db.put("wires", wire.conn_id, wire.record())

    def _engine(self, wire: Wire) -> Engine:
        return self.engines[wire.engine]

    def _check_new(self, conn_id: str) -> None:
        if conn_id in self.wires:
            raise DataplaneError(f"connection {conn_id} already has a vWire")

    async def _start(self, wire: Wire, keepalive_s: float = 0.0,
                     peer: tuple[str, int] | None = None) -> None:
        """Puts the wire's lanes on engines: a multi-queue wire's queue k on engine k, any
        other wire on the least loaded engine."""
        hdr = tundev.VNET_HDR_BYTES if wire.offload else 0
        least = min(range(len(self.engines)), key=self._load.__getitem__)
        try:
            if wire.kind == "local":
                pairs = list(zip(*wire.devices, strict=True))
                for k, (fd_c, fd_e) in enumerate(pairs):
                    engine = k if len(pairs) > 1 else least
                    wire.lanes.append(Lane(engine, self.engines[engine].add_wire(
                        fd_c, fd_e, hdr, wire.l2)))
                    self._load[engine] += 1
            else:
                engine = least
                ip, port = peer or ("0.0.0.0", 0)
                wire.lanes.append(Lane(engine, self.engines[engine].add_tunnel_wire(
                    wire.devices[0][0], ip, port, keepalive_s=keepalive_s, vnet_hdr=hdr,
                    l2=wire.l2)))
                self._load[engine] += 1
            self._record(wire)
        except BaseException:
            self._stop_lanes(wire)
            await self._remove_devices(wire)
            raise
        self.wires[wire.conn_id] = wire

    def _stop_lanes(self, wire: Wire) -> None:
        for lane in wire.lanes:
            with contextlib.suppress(KeyError):
                self.engines[lane.engine].remove_wire(lane.handle)
            self._load[lane.engine] -= 1
        wire.lanes.clear()  # in place: a relay's halves share the list

    async def _remove_devices(self, wire: Wire) -> None:
        for fds in wire.devices:
            await asyncio.to_thread(tundev.remove, fds)
        wire.devices = []

    async def _remove_by_name(self, wire: Wire) -> None:
        for side in (wire.client, wire.endpoint):
            if side is not None and netns.exists(side.netns):
                with contextlib.suppress(DataplaneError):
                    await netns.run_in(side.netns, tundev.remove_by_name, side.ifname)


def _add_into(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _add_into(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
