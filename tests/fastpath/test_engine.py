"""The packet engine with fakes at the TUN boundary: datagram socketpairs keep packet edges."""

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsmd.fastpath import reference
from nsmd.fastpath.engine import Engine, classify
from nsmd.testing.packets import ipv4, ipv6
from nsmd.testing.sandbox import wait_briefly


@pytest.fixture
def engine():
    e = Engine()
    e.start()
    yield e
    e.stop()


@pytest.fixture
def pair_of_fakes():
    socks = []

    def make():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        socks.extend((a, b))
        b.settimeout(1)
        return a, b
    yield make
    for s in socks:
        s.close()


def test_packets_cross_both_ways_and_are_counted(engine, pair_of_fakes):
    client_app, client_tun = pair_of_fakes()
    endpoint_app, endpoint_tun = pair_of_fakes()
    handle = engine.add_wire(client_tun.fileno(), endpoint_tun.fileno())
    client_app.settimeout(1)
    endpoint_app.settimeout(1)
    for i in range(200):
        client_app.send(ipv4(bytes([i % 256]) * 100))
    received = [endpoint_app.recv(2000) for _ in range(200)]
    assert received[7] == ipv4(bytes([7]) * 100)
    endpoint_app.send(ipv6())
    assert client_app.recv(2000) == ipv6()
    stats = engine.wire_stats(handle)
    assert stats["a_to_b"]["tx_packets"] == 200
    assert stats["a_to_b"]["tx_bytes"] == 200 * 120
    assert stats["b_to_a"]["tx_packets"] == 1


def test_bad_packets_are_dropped_by_reason_and_the_wire_keeps_working(engine, pair_of_fakes):
    app, tun = pair_of_fakes()
    peer_app, peer_tun = pair_of_fakes()
    handle = engine.add_wire(tun.fileno(), peer_tun.fileno())
    bad = [b"\x00" * 30, ipv4(total=500), b"\x45" + bytes(5), b"\x60" + bytes(10),
           bytes([0x4F, 0, 0, 20]) + bytes(16)]
    for packet in bad:
        app.send(packet)
    app.send(ipv4())
    assert peer_app.recv(2000) == ipv4()
    assert wait_briefly(lambda: engine.wire_stats(handle)["a_to_b"]["rx_packets"] == 6)
    drops = engine.wire_stats(handle)["a_to_b"]["drops"]
    assert drops["not_ip"] == 1 and drops["malformed"] == 4
    assert sum(drops.values()) == 5


def test_removed_wires_stop_and_stale_handles_are_refused(engine, pair_of_fakes):
    app, tun = pair_of_fakes()
    peer_app, peer_tun = pair_of_fakes()
    handle = engine.add_wire(tun.fileno(), peer_tun.fileno())
    app.send(ipv4())
    peer_app.recv(2000)
    final = engine.remove_wire(handle)
    assert final["a_to_b"]["tx_packets"] == 1
    app.send(ipv4())
    peer_app.settimeout(0.1)
    with pytest.raises(TimeoutError):
        peer_app.recv(2000)
    with pytest.raises(KeyError):
        engine.wire_stats(handle)
    with pytest.raises(KeyError):
        engine.remove_wire(handle)
    assert engine.totals()["tx_packets"] == 1 and engine.totals()["wires"] == 0
    # the slot is reused under a new generation: the old handle still misses
    new = engine.add_wire(tun.fileno(), peer_tun.fileno())
    assert new != handle and engine.totals()["wires"] == 1


def test_vnet_headers_travel_with_their_packets(engine, pair_of_fakes):
    app, tun = pair_of_fakes()
    peer_app, peer_tun = pair_of_fakes()
    handle = engine.add_wire(tun.fileno(), peer_tun.fileno(), vnet_hdr=10)
    gso = bytes([1, 4, 0x34, 0, 0xA8, 5, 34, 0, 16, 0])  # NEEDS_CSUM, TCPv4, sizes
    big = ipv4(b"z" * 60000)
    app.send(gso + big)
    assert peer_app.recv(70000) == gso + big
    app.send(gso + b"\x00" * 30)   # the header is skipped before classifying
    app.send(b"short")             # not even a header
    assert wait_briefly(lambda: engine.wire_stats(handle)["a_to_b"]["rx_packets"] == 3)
    stats = engine.wire_stats(handle)["a_to_b"]
    assert stats["tx_bytes"] == len(big) and stats["drops"]["not_ip"] == 1
    assert stats["drops"]["malformed"] == 1
    with pytest.raises(ValueError):
        engine.add_wire(tun.fileno(), peer_tun.fileno(), vnet_hdr=7)


def test_slots_are_recycled_over_many_generations(engine, pair_of_fakes):
    app, tun = pair_of_fakes()
    peer_app, peer_tun = pair_of_fakes()
    handles = set()
    for _ in range(5):
        handle = engine.add_wire(tun.fileno(), peer_tun.fileno())
        handles.add(handle)
        app.send(ipv4())
        assert peer_app.recv(2000) == ipv4()
        assert engine.remove_wire(handle)["a_to_b"]["tx_packets"] == 1
    assert len(handles) == 5 and engine.totals()["tx_packets"] == 5
    for bad in (-1, 1 << 70, "x"):
        with pytest.raises(KeyError):
            engine.wire_stats(bad)


def test_many_wires_grow_the_table(engine, pair_of_fakes):
    ends = []
    for _ in range(150):
        a_app, a = pair_of_fakes()
        b_app, b = pair_of_fakes()
        ends.append((a_app, b_app, engine.add_wire(a.fileno(), b.fileno())))
    for a_app, _, _ in ends:
        a_app.send(ipv4())
    for _, b_app, _ in ends:
        assert b_app.recv(2000) == ipv4()
    assert engine.totals()["wires"] == 150


def test_a_failing_side_is_marked_dead_instead_of_spinning(engine, pair_of_fakes):
    app, tun = pair_of_fakes()
    peer_app, peer_tun = pair_of_fakes()
    stream_a, stream_b = socket.socketpair()  # a stream socket whose read will fail
    handle = engine.add_wire(stream_a.fileno(), peer_tun.fileno())
    stream_b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    stream_b.send(b"x")
    stream_b.close()  # RST: the next read gets ECONNRESET
    assert wait_briefly(lambda: engine.wire_stats(handle)["dead"][0] or
                    engine.wire_stats(handle)["a_to_b"]["rx_packets"] > 0)
    stream_a.close()


def test_add_wire_rejects_bad_fds(engine):
    with pytest.raises(ValueError):
        engine.add_wire(3, 3)
    with pytest.raises(OSError):
        engine.add_wire(9999, 9998)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80) | st.builds(
    lambda v, rest: bytes([v]) + rest, st.sampled_from([0x45, 0x46, 0x60, 0x4F]),
    st.binary(max_size=80)))
def test_classify_agrees_with_the_readable_reference(packet):
    assert classify(packet) == reference.classify(packet)
