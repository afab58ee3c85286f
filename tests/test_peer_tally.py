"""PeerTally: which way a wire's counters go for its peer, closed wires kept, names bounded."""

from __future__ import annotations

from nsmd.dataplane.peers import PeerTally, peer_of
from nsmd.dataplane.wires import Side, Wire, WireKind


def stats(up: int, down: int, roams: int = 0, heard: float | None = 1.0) -> dict:
    return {"client_to_endpoint": {"tx_bytes": up * 100, "tx_packets": up},
            "endpoint_to_client": {"tx_bytes": down * 100, "tx_packets": down},
            "tunnel": {"peer": ("192.0.2.2", 7001), "roams": roams, "last_rx_age_s": heard}}


def tunnel(conn_id: str, peer: str, client_side: bool) -> Wire:
    side = Side("", "nsm0", [])
    wire = Wire(conn_id, WireKind.TUNNEL, side if client_side else None,
                None if client_side else side, 1400)
    if client_side:
        wire.remote = ("https://192.0.2.2:7000", peer)
    else:
        wire.owner = {"spiffe_id": peer, "url": "https://192.0.2.1:7000", "segment": "s"}
    return wire


def test_directions_follow_the_side_the_peer_is_on():
    near = tunnel("a", "spiffe://t/n2", client_side=True)
    far = tunnel("b", "spiffe://t/n1", client_side=False)
    (row,) = PeerTally().rows([(near, stats(up=5, down=3))])
    assert (row["tx_packets"], row["rx_packets"]) == (5, 3)
    (row,) = PeerTally().rows([(far, stats(up=5, down=3))])
    assert (row["tx_packets"], row["rx_packets"]) == (3, 5)
    half = Wire("c", WireKind.RELAY, None, None, 1400, side=0, owner={"spiffe_id": "x"})
    (row,) = PeerTally().rows([(half, stats(up=5, down=3))])
    assert (row["tx_packets"], row["rx_packets"]) == (3, 5)  # its peer is the client's side


def test_closed_wires_stay_counted_and_live_ones_add():
    tally = PeerTally()
    first, second = (tunnel(i, "spiffe://t/n2", True) for i in "ab")
    tally.retire(first, stats(up=5, down=3, roams=1))
    (row,) = tally.rows([(second, stats(up=2, down=2, heard=0.25))])
    assert (row["wires"], row["tx_packets"], row["rx_packets"], row["roams"]) == (1, 7, 5, 1)
    assert row["last_rx_age_s"] == 0.25 and row["address"] == "192.0.2.2:7001"
    (row,) = tally.rows([])
    assert (row["wires"], row["tx_packets"], row["last_rx_age_s"]) == (0, 5, None)


def test_peer_names_are_bounded():
    tally = PeerTally(limit=2)
    for i in range(4):
        tally.retire(tunnel(str(i), f"spiffe://t/n{i}", True), stats(up=1, down=1))
    rows = {r["peer"]: r["tx_packets"] for r in tally.rows([])}
    assert rows == {"spiffe://t/n0": 1, "spiffe://t/n1": 1, "other": 2}


def test_a_peer_without_an_identity_is_named_by_its_address():
    wire = Wire("a", WireKind.TUNNEL, Side("", "nsm0", []), None, 1400, peer=("192.0.2.9", 9))
    assert peer_of(wire) == "192.0.2.9:9"
