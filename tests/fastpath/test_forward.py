"""A NAT relay's forward wire: two UDP sockets passing datagrams unopened, each end
latched to its allowed sender; and probes, which try a direct path past the relay."""

from __future__ import annotations

import socket
import time

from nsmd.fastpath.engine import Engine
from nsmd.testing.packets import ipv4
from nsmd.testing.sandbox import wait_briefly
from tests.fastpath.test_tunnel import Side, key_up


def udp(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2)
    return s


def test_datagrams_pass_between_latched_ends_and_nowhere_else():
    engine = Engine()
    engine.start()
    end_a, end_b, relay_a, relay_b = udp(), udp(), udp(), udp()
    stranger = udp("127.0.0.2")
    try:
        handle = engine.add_forward_wire(relay_a.fileno(), relay_b.fileno(), "127.0.0.1",
                                         "127.0.0.1")
        end_a.sendto(b"before b showed itself", relay_a.getsockname())
        assert wait_briefly(lambda: engine.wire_stats(handle)["a_to_b"]["drops"]["tx_error"]
                            == 1)
        end_b.sendto(b"from b", relay_b.getsockname())   # b shows itself: a is latched
        assert end_a.recvfrom(100) == (b"from b", relay_a.getsockname())
        end_a.sendto(b"from a", relay_a.getsockname())
        assert end_b.recvfrom(100) == (b"from a", relay_b.getsockname())
        stranger.sendto(b"hijack", relay_b.getsockname())  # not b's address: refused
        end_a.sendto(b"still to b", relay_a.getsockname())
        assert end_b.recvfrom(100)[0] == b"still to b"
        stats = engine.wire_stats(handle)
        assert stats["forward"]["refused"] == [0, 1]
        assert stats["forward"]["latched"] == [end_a.getsockname(), end_b.getsockname()]
        assert (stats["a_to_b"]["tx_packets"], stats["b_to_a"]["tx_packets"]) == (2, 1)
        moved = udp()   # b's NAT remapped it: the relay follows its next datagram
        moved.sendto(b"b, moved", relay_b.getsockname())
        assert end_a.recvfrom(100)[0] == b"b, moved"
        end_a.sendto(b"to the new b", relay_a.getsockname())
        assert moved.recvfrom(100)[0] == b"to the new b"
        final = engine.remove_wire(handle)
        assert final["forward"]["latched"][1] == moved.getsockname()
    finally:
        engine.stop()
        for s in (end_a, end_b, relay_a, relay_b, stranger):
            s.close()


def test_a_probe_that_gets_through_moves_both_ends_to_the_direct_path():
    a, b = Side(), Side()
    detour = udp()   # where both ends send first (a relay that passes nothing)
    try:
        a.connect(detour.getsockname()[1], keepalive_s=0.3)
        b.connect(detour.getsockname()[1], keepalive_s=0.3)
        key_up(a, b)
        a.engine.probe(a.handle, "127.0.0.1", b.port)   # a tries b directly ...
        # ... b's tunnel roams to a's authenticated probe, then a roams to b's keepalives
        assert wait_briefly(lambda: b.stats()["tunnel"]["peer"] == ("127.0.0.1", a.port))
        assert wait_briefly(lambda: a.stats()["tunnel"]["peer"] == ("127.0.0.1", b.port))
        assert a.stats()["tunnel"]["probes_tx"] == 1
    finally:
        a.close()
        b.close()
        detour.close()


def test_a_peer_heard_directly_is_not_pulled_back_by_what_the_relay_passes_late():
    a, b = Side(), Side()
    relay = udp()   # stands in for a relay port: the test passes a's datagrams on to b

    def pass_one_on() -> None:
        datagram, _ = relay.recvfrom(4096)
        relay.sendto(datagram, ("127.0.0.1", b.port))

    try:
        a.connect(relay.getsockname()[1])
        b.connect(relay.getsockname()[1])
        b.engine.set_relay(b.handle, "127.0.0.1", relay.getsockname()[1])
        key_up(a, b)
        a.app.send(ipv4(b"through the relay"))
        pass_one_on()
        assert b.app.recv(2000) == ipv4(b"through the relay")
        assert b.stats()["tunnel"]["peer"] == relay.getsockname()
        a.engine.probe(a.handle, "127.0.0.1", b.port)    # the direct path opens
        assert wait_briefly(lambda: b.stats()["tunnel"]["peer"] == ("127.0.0.1", a.port))
        a.app.send(ipv4(b"late, through the relay"))
        pass_one_on()
        assert b.app.recv(2000) == ipv4(b"late, through the relay")   # taken ...
        assert b.stats()["tunnel"]["peer"] == ("127.0.0.1", a.port)   # ... but no pull back
        time.sleep(2.1)   # the direct path went quiet: the relay is the way again
        a.app.send(ipv4(b"relay again"))
        pass_one_on()
        assert b.app.recv(2000) == ipv4(b"relay again")
        assert b.stats()["tunnel"]["peer"] == relay.getsockname()
    finally:
        a.close()
        b.close()
        relay.close()
