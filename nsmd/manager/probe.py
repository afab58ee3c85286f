"""Is a vWire's data plane alive on this host? The one check healing and liveness share.

NSM pings through the data plane; here the engine already knows: a side's namespace gone,
its device failed, or a tunnel that heard nothing from the far host (not even a
keepalive: idle tunnels send one every keepalive interval) for longer than `silence_s`.
"""

from __future__ import annotations

from nsmd import netns
from nsmd.dataplane import Dataplane, Wire
from nsmd.model import Connection


def timings(detect_s: float) -> tuple[float, float]:
    """(check interval, tunnel silence limit) that find a dead data plane within
    `detect_s`: a check every quarter, and silence of three quarters is death."""
    return detect_s / 4, detect_s * 3 / 4


class DataplaneProbe:
    def __init__(self, dataplane: Dataplane, silence_s: float):
        self.dataplane = dataplane
        self.silence_s = silence_s

    def __call__(self, conn: Connection) -> str | None:
        """Why the connection's data plane here is dead, or None if it is alive. `conn` is
        as some hop on this host sees it: the wire is that hop's or a later one's."""
        ids = [s.id for s in conn.path.path_segments[conn.path.index:]]
        wire = self.dataplane.wire_of(ids)
        if wire is None:
            return "no vWire on this host"
        return self.wire(wire)

    def wire(self, wire: Wire) -> str | None:
        """Why `wire` is dead ("client ..." / "endpoint ..."), or None if it is alive."""
        stats = self.dataplane.stats(wire.conn_id) or {"dead": {}}
        for role, side in (("client", wire.client), ("endpoint", wire.endpoint)):
            if side is not None and not netns.exists(side.netns):
                return f"{role} namespace {side.netns!r} is gone"
            if side is not None and stats["dead"].get(role):
                return f"{role} device failed"
        tunnel = stats.get("tunnel")
        if tunnel is not None:
            # a wire re-attached after a restart and never keyed again counts from then
            silent = tunnel["last_rx_age_s"] if wire.keyed else None
            silent = stats["age_s"] if silent is None else silent
            if silent > self.silence_s:
                far = "endpoint" if wire.client is not None or wire.side == 1 else "client"
                return f"{far} host silent for {silent:.1f} s"
        return None
