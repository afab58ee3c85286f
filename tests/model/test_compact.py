"""Packed connections (what begin keeps) come back equal, and as objects of their own."""

from nsmd.model import (
    Connection,
    ConnectionContext,
    IPContext,
    Mechanism,
    Path,
    PathSegment,
    Route,
    State,
)
from nsmd.model.codec import copy_model
from nsmd.model.compact import pack, unpack


def full_connection() -> Connection:
    return Connection(
        id="c-1", network_service="svc", state=State.UP, payload="IP",
        mechanism=Mechanism("LOCAL", "KERNEL", {"netns": "ns-a", "name": "nsm0"}),
        context=ConnectionContext(ip_context=IPContext(
            src_ip_addrs=["100.64.0.2/32"], dst_ip_addrs=["100.64.0.1/32"],
            src_routes=[Route("100.64.0.1/32")], dst_routes=[Route("100.64.0.2/32", "")]),
            extra_context={"k": "v"}, mtu=1420),
        labels={"nodeName": "n1"}, network_service_endpoint_name="svc-1",
        path=Path(1, [PathSegment("nsc", "c-1", "tok.en.a", 1764000000.25),
                      PathSegment("n1", "c-2", "tok.en.b", 1764000000.5, {"rx_bytes": "7"})]))


def test_a_packed_connection_unpacks_equal_and_unshared():
    conn = full_connection()
    packed = pack(Connection, conn)
    first, second = unpack(Connection, packed), unpack(Connection, packed)
    assert first == conn and second == conn
    first.path.path_segments[0].metrics["x"] = "1"
    first.labels["changed"] = "yes"
    assert second == conn  # each unpack is an object tree of its own
    empty = Connection()  # no mechanism, defaults everywhere
    assert unpack(Connection, pack(Connection, empty)) == empty


def test_packed_is_smaller_than_the_object_tree():
    import tracemalloc

    conn = full_connection()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        trees = [copy_model(conn) for _ in range(100)]
        tree_bytes = (tracemalloc.get_traced_memory()[0] - before) / 100
    finally:
        tracemalloc.stop()
    assert len(trees) == 100
    packed = len(pack(Connection, conn))
    assert packed < tree_bytes / 3, (packed, tree_bytes)


def test_mechanism_lists_round_trip():
    prefs = [Mechanism("LOCAL", "KERNEL", {"netns": "a"}), Mechanism("REMOTE", "NSMD_UDP")]
    assert unpack(list[Mechanism], pack(list[Mechanism], prefs)) == prefs


def test_a_packer_deflates_alike_objects_and_reads_back_every_one():
    from nsmd.model.compact import Packer

    packer = Packer(Connection)
    conns = []
    for i in range(50):
        conn = full_connection()
        conn.id = f"c-{i:04d}-{'x' * 30}"
        conn.path.path_segments[1].metrics["rx_bytes"] = str(i * 7919)
        conns.append(conn)
    packed = [packer.pack(c) for c in conns]
    assert [packer.unpack(p) for p in packed] == conns  # the first (the dictionary) too
    # after the first, each is a fraction of its plain packing: the rest are references
    assert max(len(p) for p in packed[1:]) < len(pack(Connection, conns[1])) / 2
    other = Packer(Connection)  # another packer has another dictionary
    other.pack(Connection())
    assert other.unpack(other.pack(conns[3])) == conns[3]
