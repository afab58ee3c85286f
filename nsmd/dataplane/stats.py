"""The engines' counters, as the control path reports them: per wire from the client's
point of view, summed per daemon, and per engine."""

from __future__ import annotations

import time

from nsmd.dataplane.wires import Wire, WireKind
from nsmd.fastpath.engine import Engine


def wire_stats(engines: list[Engine], wire: Wire) -> dict | None:
    """client_to_endpoint and endpoint_to_client counters, which side's device failed,
    and for a tunnel its own counters and the wire's age."""
    if not wire.lanes:
        return None
    raw: dict = {}
    dead = [False, False]
    for lane in wire.lanes:
        part = engines[lane.engine].wire_stats(lane.handle)
        dead = [dead[i] or part["dead"][i] for i in (0, 1)]
        part.pop("dead")
        tunnels = part.pop("tunnel", None), part.pop("tunnel2", None)
        if tunnels[wire.side] is not None:  # a relay half: its own tunnel
            raw["tunnel"] = tunnels[wire.side]
        add_into(raw, part)
    # a_to_b counts what fd[0] sent: the client's TUN, or the endpoint's on its host.
    forward, backward = raw["a_to_b"], raw["b_to_a"]
    dead_by_side = {"client": dead[0], "endpoint": dead[1]}
    if wire.kind == WireKind.TUNNEL and wire.endpoint is not None:
        forward, backward = backward, forward
        dead_by_side = {"client": False, "endpoint": dead[0]}
    result = {"client_to_endpoint": forward, "endpoint_to_client": backward,
              "dead": dead_by_side}
    if "tunnel" in raw:
        result["tunnel"] = raw["tunnel"]
        result["age_s"] = time.monotonic() - wire.created
    return result


def totals(engines: list[Engine], wires: int) -> dict:
    """Counters summed over the engines (for /metrics and status)."""
    total: dict = {}
    for engine in engines:
        add_into(total, engine.totals())
    total["lanes"] = total.pop("wires", 0)
    total["wires"] = wires
    return total


def per_engine(engines: list[Engine]) -> list[dict]:
    """Lanes and packets per engine: how the load spreads over the cores."""
    return [{"lanes": t["wires"], "rx_packets": t["rx_packets"],
             "tx_packets": t["tx_packets"]}
            for t in (engine.totals() for engine in engines)]


def add_into(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            add_into(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
