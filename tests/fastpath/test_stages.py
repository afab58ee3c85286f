"""Stages in the engine: function stages installed on wires run over every batch, in
order, both ways; drops are counted as `filtered`; a wire without stages is untouched.
TUN devices are faked by datagram socketpairs, tunnels run over loopback."""

from __future__ import annotations

import socket

import pytest

from nsmd.fastpath.engine import Engine
from nsmd.plugins.api import parse_function
from nsmd.testing.packets import arrives, ipv4_flow
from nsmd.testing.sandbox import wait_briefly

C, E = "100.64.0.1", "100.64.0.2"
RULES = {"default": "deny", "rules": [
    {"action": "allow", "proto": "icmp"},
    {"action": "allow", "proto": "tcp", "ports": "8080,9000-9100"},
    {"action": "deny", "proto": "tcp", "ports": "80"}]}


def firewall(config=RULES):
    return parse_function("firewall", config, "functions[0]").attach(None)


def test_a_firewall_stage_filters_what_the_client_sends_and_passes_replies(wire):
    engine, handle, client, endpoint = wire
    fw = firewall()
    engine.set_stages(handle, 0, 0, [fw])   # packets from the client's side
    engine.set_stages(handle, 1, 1, [fw])   # and back
    assert arrives(client, endpoint, ipv4_flow("icmp", C, E, 7))
    assert arrives(endpoint, client, ipv4_flow("icmp", E, C, 7, icmp_type=0))  # the reply
    assert arrives(client, endpoint, ipv4_flow("tcp", C, E, 40000, 9050))
    assert arrives(endpoint, client, ipv4_flow("tcp", E, C, 9050, 40000))
    assert not arrives(client, endpoint, ipv4_flow("tcp", C, E, 40001, 80))     # rule 3
    assert not arrives(client, endpoint, ipv4_flow("udp", C, E, 5000, 53))      # default
    assert not arrives(endpoint, client, ipv4_flow("tcp", E, C, 22, 40002))     # unsolicited
    stats = fw.stats()
    assert (stats["rule0_packets"], stats["rule1_packets"], stats["rule2_packets"]) == (1, 1, 1)
    assert stats["replies"] == 2 and stats["default_packets"] == 2
    wire_stats = engine.wire_stats(handle)
    assert wire_stats["a_to_b"]["drops"]["filtered"] == 2
    assert wire_stats["b_to_a"]["drops"]["filtered"] == 1
    # removed, the wire passes everything again
    engine.set_stages(handle, 0, 0, [])
    assert arrives(client, endpoint, ipv4_flow("udp", C, E, 5000, 53))


def test_stages_run_in_order_and_a_dropped_packet_skips_the_rest(wire):
    engine, handle, client, endpoint = wire
    first = firewall({"default": "allow", "rules": [{"action": "deny", "proto": "udp"}]})
    second = firewall({"default": "allow", "rules": [{"action": "allow", "proto": "tcp"}]})
    engine.set_stages(handle, 0, 0, [first, second])
    assert not arrives(client, endpoint, ipv4_flow("udp", C, E, 1, 2))
    assert arrives(client, endpoint, ipv4_flow("tcp", C, E, 1, 2))
    assert second.stats()["default_packets"] == 0   # the UDP packet never reached it
    assert second.stats()["rule0_packets"] == 1


def test_bad_stage_lists_are_refused(wire):
    engine, handle, *_ = wire

    class NotAStage:
        def stage_capsule(self):
            return object()

    with pytest.raises(TypeError, match="capsule"):
        engine.set_stages(handle, 0, 0, [NotAStage()])
    with pytest.raises(ValueError, match="at most"):
        engine.set_stages(handle, 0, 0, [firewall()] * 9)
    with pytest.raises(KeyError):
        engine.set_stages(handle + 1, 0, 0, [firewall()])
    engine.remove_wire(handle)


def test_stages_on_a_tunnel_wire_see_both_directions(wire):
    """Endpoint side of a tunnel: stages on the TUN read (endpoint to client) and on the
    packets opened from the tunnel (client to endpoint)."""
    import os

    a, b = Engine(), Engine()
    socks = []
    try:
        sides = []
        for engine in (a, b):
            engine.start()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            engine.set_udp_socket(udp.fileno())
            app, tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            app.settimeout(0.3)
            socks += [udp, app, tun]
            sides.append((engine, udp, app, tun))
        (_, udp_a, app_a, tun_a), (_, udp_b, app_b, tun_b) = sides
        ha = a.add_tunnel_wire(tun_a.fileno(), "127.0.0.1", udp_b.getsockname()[1])
        hb = b.add_tunnel_wire(tun_b.fileno(), "127.0.0.1", udp_a.getsockname()[1])
        k1, k2 = os.urandom(32), os.urandom(32)
        ia, ib = a.next_local_index(ha), b.next_local_index(hb)
        b.install_keypair(hb, ib, ia, k2, k1, True)
        a.install_keypair(ha, ia, ib, k1, k2, True)
        fw = firewall()  # B hosts the endpoint: client_to_endpoint arrives from the tunnel
        b.set_stages(hb, 1, 0, [fw])
        b.set_stages(hb, 0, 1, [fw])
        assert arrives(app_a, app_b, ipv4_flow("icmp", C, E, 9))
        assert arrives(app_b, app_a, ipv4_flow("icmp", E, C, 9, icmp_type=0))
        assert not arrives(app_a, app_b, ipv4_flow("udp", C, E, 1, 53))
        assert not arrives(app_b, app_a, ipv4_flow("udp", E, C, 53, 1))
        assert wait_briefly(lambda: b.wire_stats(hb)["b_to_a"]["drops"]["filtered"] == 1)
        assert b.wire_stats(hb)["a_to_b"]["drops"]["filtered"] == 1
        assert fw.stats()["replies"] == 1
    finally:
        a.stop()
        b.stop()
        for s in socks:
            s.close()


def test_a_relay_wire_carries_a_chain_between_two_other_hosts():
    """client host A --tunnel--> relay R --tunnel--> endpoint host B, with R's stages
    between its two tunnels, both ways, and keepalives on both of R's tunnels."""
    import os

    engines, socks = [], []

    def host():
        engine = Engine()
        engine.start()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        engine.set_udp_socket(udp.fileno())
        engines.append(engine)
        socks.append(udp)
        return engine, udp.getsockname()[1]

    def key(e1, h1, e2, h2, side1=0, side2=0):
        k12, k21 = os.urandom(32), os.urandom(32)
        i1, i2 = e1.next_local_index(h1), e2.next_local_index(h2)
        e2.install_keypair(h2, i2, i1, k21, k12, True, side=side2)
        e1.install_keypair(h1, i1, i2, k12, k21, True, side=side1)

    try:
        (a, port_a), (r, port_r), (b, port_b) = host(), host(), host()
        app_a, tun_a = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        app_b, tun_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        socks += [app_a, tun_a, app_b, tun_b]
        for app in (app_a, app_b):
            app.settimeout(0.5)
        ha = a.add_tunnel_wire(tun_a.fileno(), "127.0.0.1", port_r)
        hb = b.add_tunnel_wire(tun_b.fileno(), "127.0.0.1", port_r)
        hr = r.add_relay_wire(keepalive_s=0.2)
        r.set_peer(hr, "127.0.0.1", port_a, side=0)
        r.set_peer(hr, "127.0.0.1", port_b, side=1)
        key(a, ha, r, hr, side2=0)
        key(b, hb, r, hr, side2=1)
        fw = firewall()
        r.set_stages(hr, 0, 0, [fw])   # from the client's side
        r.set_stages(hr, 1, 1, [fw])
        assert arrives(app_a, app_b, ipv4_flow("icmp", C, E, 3))
        assert arrives(app_b, app_a, ipv4_flow("icmp", E, C, 3, icmp_type=0))
        assert arrives(app_a, app_b, ipv4_flow("tcp", C, E, 40000, 8080, payload=b"x" * 1200))
        assert not arrives(app_a, app_b, ipv4_flow("tcp", C, E, 40001, 80))
        stats = r.wire_stats(hr)
        assert stats["a_to_b"]["tx_packets"] == 2 and stats["a_to_b"]["drops"]["filtered"] == 1
        assert stats["b_to_a"]["tx_packets"] == 1
        assert wait_briefly(lambda: r.wire_stats(hr)["tunnel"]["keepalives_tx"] > 0
                            and r.wire_stats(hr)["tunnel2"]["keepalives_tx"] > 0)
        r.remove_wire(hr)
        assert not arrives(app_a, app_b, ipv4_flow("icmp", C, E, 4))
        assert wait_briefly(lambda: r.totals()["udp_drops"]["unknown_index"] >= 1)
    finally:
        for engine in engines:
            engine.stop()
        for s in socks:
            s.close()


def test_ethernet_wires_carry_frames_and_stages_see_the_ip_inside():
    engine = Engine()
    engine.start()
    socks = [*socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM),
             *socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)]
    client, client_tap, endpoint, endpoint_tap = socks
    for s in (client, endpoint):
        s.settimeout(0.3)
    try:
        handle = engine.add_wire(client_tap.fileno(), endpoint_tap.fileno(), l2=True)
        macs = bytes.fromhex("02aabbccdd01") + bytes.fromhex("02aabbccdd02")
        ip_frame = macs + b"\x08\x00" + ipv4_flow("icmp", C, E, 5)
        arp = b"\xff" * 6 + macs[6:] + b"\x08\x06" + bytes(28)
        assert arrives(client, endpoint, ip_frame)
        assert arrives(client, endpoint, arp)
        assert not arrives(client, endpoint, b"\x02" * 10)              # no Ethernet header
        assert not arrives(client, endpoint, macs + b"\x08\x00" + b"\x45" + bytes(5))
        fw = firewall({"default": "deny", "rules": [{"action": "allow", "proto": "icmp"}]})
        engine.set_stages(handle, 0, 0, [fw])
        engine.set_stages(handle, 1, 1, [fw])
        assert arrives(client, endpoint, ip_frame)                      # allowed inside
        assert arrives(client, endpoint, arp)                           # not IP: untouched
        assert not arrives(client, endpoint, macs + b"\x08\x00" + ipv4_flow("udp", C, E, 1, 2))
        assert fw.stats()["rule0_packets"] == 1 and fw.stats()["default_packets"] == 1
        assert engine.wire_stats(handle)["a_to_b"]["drops"]["malformed"] == 2
    finally:
        engine.stop()
        for s in socks:
            s.close()
