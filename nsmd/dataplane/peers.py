"""Per-peer tunnel counters, as `wg show` gives them: for each far daemon this host has
tunnels with, what went to it and came from it, and when it was last heard from
(`nsmd get peers`, the nsmd_peer_* metrics).

A peer is named by its SPIFFE ID (the daemon we keyed towards, or the one that asked for
the wire), else its URL, else the tunnel's address. Counters of closed wires stay in the
peer's retired totals, so a peer's counters never go back; past MAX_PEERS names, further
peers are summed under "other" (a label set that stays bounded).
"""

from __future__ import annotations

from collections.abc import Iterable

from nsmd.dataplane.wires import Wire, WireKind

MAX_PEERS = 1024
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "roams")


def peer_of(wire: Wire) -> str:
    owner = wire.owner or {}
    remote_url, remote_id = wire.remote or ("", "")
    named = remote_id or owner.get("spiffe_id") or remote_url or owner.get("url")
    if named:
        return named
    return "{}:{}".format(*wire.peer) if wire.peer else "unknown"


def _towards_endpoint(wire: Wire) -> bool:
    """Whether the peer lies on the endpoint's side of this wire (we are nearer the client)."""
    if wire.kind == WireKind.RELAY:
        return wire.side == 1
    return wire.endpoint is None


def wire_counts(wire: Wire, stats: dict) -> dict:
    """What this wire sent to and received from its peer."""
    up, down = stats["client_to_endpoint"], stats["endpoint_to_client"]
    sent, received = (up, down) if _towards_endpoint(wire) else (down, up)
    return {"tx_bytes": sent["tx_bytes"], "tx_packets": sent["tx_packets"],
            "rx_bytes": received["tx_bytes"], "rx_packets": received["tx_packets"],
            "roams": stats["tunnel"]["roams"]}


class PeerTally:
    def __init__(self, limit: int = MAX_PEERS):
        self.limit = limit
        self._retired: dict[str, dict[str, int]] = {}

    def _name(self, peer: str) -> str:
        if peer in self._retired or len(self._retired) < self.limit:
            return peer
        return "other"

    def retire(self, wire: Wire, stats: dict | None) -> None:
        """Keeps a closing wire's counters in its peer's totals."""
        if stats is None or "tunnel" not in stats:
            return
        totals = self._retired.setdefault(self._name(peer_of(wire)), dict.fromkeys(COUNTERS, 0))
        for key, value in wire_counts(wire, stats).items():
            totals[key] += value

    def rows(self, live: Iterable[tuple[Wire, dict | None]]) -> list[dict]:
        """One row per peer: live wires, counters (retired included), the tunnel address
        last used and the shortest silence of its live wires."""
        rows: dict[str, dict] = {
            peer: {"peer": peer, "address": None, "wires": 0, "last_rx_age_s": None,
                   **totals} for peer, totals in self._retired.items()}
        for wire, stats in live:
            if stats is None or "tunnel" not in stats:
                continue
            peer = self._name(peer_of(wire))
            row = rows.setdefault(peer, {"peer": peer, "address": None, "wires": 0,
                                         "last_rx_age_s": None, **dict.fromkeys(COUNTERS, 0)})
            row["wires"] += 1
            tunnel = stats["tunnel"]
            row["address"] = "{}:{}".format(*tunnel["peer"])
            heard = tunnel["last_rx_age_s"]
            if heard is not None and (row["last_rx_age_s"] is None
                                      or heard < row["last_rx_age_s"]):
                row["last_rx_age_s"] = round(heard, 3)
            for key, value in wire_counts(wire, stats).items():
                row[key] += value
        return sorted(rows.values(), key=lambda r: r["peer"])
