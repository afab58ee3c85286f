"""The packet engines (one native thread per core), their tunnel sockets, and which engine
carries which wire.

A local wire's lanes: with several queues, queue k of both devices on engine k (the
kernel keeps each flow on one queue, so one vWire's flows spread over the cores in
order); with one, the least loaded engine. A tunnel wire or a relay: one lane on the least
loaded engine, whose socket (tunnel_port + k) its datagrams use; its keys, counters and
replay window stay on that one thread.
"""

from __future__ import annotations

import contextlib
import os
import socket

from nsmd import tundev
from nsmd.dataplane.wires import Lane, Wire, WireKind
from nsmd.errors import DataplaneError
from nsmd.fastpath.engine import Engine

UDP_BUFFER_BYTES = 7 << 20  # an overflowing socket buffer is the tunnels' main loss
# Linux socket options Python 3.11 does not name (asm-generic/socket.h, linux/udp.h).
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
UDP_GRO = 104


class Engines:
    def __init__(self, count: int = 0):
        self.engines = [Engine() for _ in range(count or os.cpu_count() or 1)]
        self.udp: list[socket.socket] = []
        self._load = [0] * len(self.engines)   # lanes per engine

    def __len__(self) -> int:
        return len(self.engines)

    def start(self) -> None:
        for engine in self.engines:
            engine.start()

    @property
    def running(self) -> bool:
        return all(engine.is_running for engine in self.engines)

    def of(self, wire: Wire) -> Engine:
        return self.engines[wire.engine]

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

    def require_tunnels(self) -> None:
        if not self.udp:
            raise DataplaneError("this daemon has no tunnel socket (run it with --listen)")

    def tunnel_address(self, wire: Wire) -> tuple[str, int]:
        """Where the peer must send this wire's datagrams (its engine's socket)."""
        self.require_tunnels()
        return self.udp[wire.engine].getsockname()[:2]

    def place(self, wire: Wire, keepalive_s: float = 0.0,
              peer: tuple[str, int] | None = None) -> None:
        """Puts the wire's devices on engines as lanes (see the module's doc)."""
        hdr = tundev.VNET_HDR_BYTES if wire.offload else 0
        least = self._least_loaded()
        if wire.kind == WireKind.LOCAL:
            pairs = list(zip(*wire.devices, strict=True))
            for k, (fd_c, fd_e) in enumerate(pairs):
                engine = k if len(pairs) > 1 else least
                self._add(wire, engine, self.engines[engine].add_wire(fd_c, fd_e, hdr,
                                                                      wire.l2))
        else:
            ip, port = peer or ("0.0.0.0", 0)
            self._add(wire, least, self.engines[least].add_tunnel_wire(
                wire.devices[0][0], ip, port, keepalive_s=keepalive_s, vnet_hdr=hdr,
                l2=wire.l2))

    def place_relay(self, keepalive_s: float, l2: bool) -> Lane:
        """One engine wire joining two tunnels, shared by the relay's two halves."""
        self.require_tunnels()
        least = self._least_loaded()
        lane = Lane(least, self.engines[least].add_relay_wire(keepalive_s, l2))
        self._load[least] += 1
        return lane

    def place_forward(self, sock_a: int, sock_b: int, allowed_a: str, allowed_b: str,
                      ) -> Lane:
        """A NAT relay's forward wire between two sockets (forwards.py)."""
        least = self._least_loaded()
        lane = Lane(least, self.engines[least].add_forward_wire(sock_a, sock_b, allowed_a,
                                                                 allowed_b))
        self._load[least] += 1
        return lane

    def remove_lane(self, lane: Lane) -> dict:
        """Takes one lane off its engine; its last counters."""
        final = self.engines[lane.engine].remove_wire(lane.handle)
        self._load[lane.engine] -= 1
        return final

    def remove(self, wire: Wire) -> None:
        """Takes the wire's lanes off their engines."""
        for lane in wire.lanes:
            with contextlib.suppress(KeyError):
                self.engines[lane.engine].remove_wire(lane.handle)
            self._load[lane.engine] -= 1
        wire.lanes.clear()  # in place: a relay's halves share the list

    def stop(self) -> None:
        for engine in self.engines:
            engine.stop()
        for sock in self.udp:
            sock.close()
        self.udp = []

    def _least_loaded(self) -> int:
        return min(range(len(self.engines)), key=self._load.__getitem__)

    def _add(self, wire: Wire, engine: int, handle: int) -> None:
        wire.lanes.append(Lane(engine, handle))
        self._load[engine] += 1
