"""A NAT relay's forwardings: for each relayed vWire, two UDP sockets of this host (one
per end, ports chosen by the kernel) joined by a forward wire on an engine, which passes
the ends' sealed datagrams between them unopened (fastpath/forward.pyx). Not vWires of
this host: they hold no device and no key, and are kept apart from Dataplane.wires."""

from __future__ import annotations

import contextlib
import dataclasses
import socket

from nsmd.dataplane.placement import SO_RCVBUFFORCE, SO_SNDBUFFORCE, UDP_BUFFER_BYTES, Engines
from nsmd.dataplane.wires import Lane
from nsmd.errors import DataplaneError


@dataclasses.dataclass
class Forwarding:
    lane: Lane
    sockets: tuple[socket.socket, socket.socket]
    allowed: tuple[str, str]    # the one address each end's socket takes datagrams from

    @property
    def ports(self) -> tuple[int, int]:
        return self.sockets[0].getsockname()[1], self.sockets[1].getsockname()[1]


class Forwards:
    def __init__(self, engines: Engines):
        self.engines = engines

    def open(self, host: str, allowed_a: str, allowed_b: str) -> Forwarding:
        """Two sockets on `host`, end A's taking datagrams only from `allowed_a`, end B's
        from `allowed_b`, on the least loaded engine."""
        sockets: list[socket.socket] = []
        try:
            for _ in range(2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                for option in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)
                sock.bind((host, 0))
            lane = self.engines.place_forward(sockets[0].fileno(), sockets[1].fileno(),
                                              allowed_a, allowed_b)
        except OSError as err:
            for sock in sockets:
                sock.close()
            raise DataplaneError(f"cannot open relay sockets on {host}: {err}") from None
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return Forwarding(lane, (sockets[0], sockets[1]), (allowed_a, allowed_b))

    def stats(self, forwarding: Forwarding) -> dict:
        return self.engines.engines[forwarding.lane.engine].wire_stats(forwarding.lane.handle)

    def close(self, forwarding: Forwarding) -> dict:
        """Stops it (the engine lets go of the sockets first) and closes the sockets;
        returns its last counters."""
        final = self.engines.remove_lane(forwarding.lane)
        for sock in forwarding.sockets:
            sock.close()
        return final
