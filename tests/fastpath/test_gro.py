"""Receive coalescing: which segments merge, and that merged frames split back exactly."""

import struct

from nsmd.fastpath import reference
from nsmd.fastpath.gro import coalesce
from nsmd.fastpath.offload import segment
from nsmd.testing.packets import ip_before_tcp


def seg(seq: int, payload: bytes, flags: int = 0x10, sport: int = 40000, ack: int = 9,
        ipv6: bool = False, window: int = 500) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, 5201, seq, ack, 8 << 4, flags, window, 0, 0)
    tcp += bytes([1, 1, 8, 10]) + struct.pack("!II", 7, 8)  # NOP NOP timestamps
    return ip_before_tcp(len(tcp) + len(payload), ipv6) + tcp + payload


def payloads(frames, ipv6=False):
    out = []
    for frame in frames:
        for packet in (segment(frame) if frame[1] else [frame[10:]]):
            assert reference.tcp_checksum_ok(packet) or not frame[1]
            out.append(packet[(40 if ipv6 else 20) + 32:])
    return out


def test_a_run_of_one_flow_becomes_one_super_packet_that_splits_back():
    for ipv6 in (False, True):
        parts = [bytes([i]) * 1000 for i in range(5)] + [b"tail"]
        packets = [seg(100 + 1000 * i, p, ipv6=ipv6) for i, p in enumerate(parts)]
        (frame,) = coalesce(packets)
        assert frame[0] == 1 and frame[1] == (4 if ipv6 else 1)
        assert struct.unpack("<H", frame[4:6])[0] == 1000  # gso_size = the run's MSS
        assert payloads([frame], ipv6) == parts


def test_runs_break_where_linux_gro_would():
    mss = b"x" * 1000
    gap = [seg(0, mss), seg(2000, mss)]                    # missing sequence range
    two_flows = [seg(0, mss), seg(1000, mss, sport=1)]     # another connection
    short_then_more = [seg(0, b"x" * 500), seg(500, mss)]  # only the last may be short
    psh = [seg(0, mss, flags=0x18), seg(1000, mss)]        # PSH ends a run
    ack = [seg(0, mss), seg(1000, mss, ack=10)]            # different ack
    syn = [seg(0, mss, flags=0x02), seg(1000, mss)]        # SYN never merges
    for packets in (gap, two_flows, short_then_more, psh, ack, syn):
        frames = coalesce(packets)
        assert len(frames) == 2, packets
        assert [f[10:] for f in frames] == packets          # written unchanged
    merged = coalesce([seg(0, mss), seg(1000, mss, flags=0x18), seg(2000, mss)])
    assert len(merged) == 2 and merged[0][1] == 1           # PSH closes after joining


def test_nothing_but_tcp_is_merged():
    udp = bytearray(seg(0, b"u" * 100))
    udp[9] = 17
    frames = coalesce([bytes(udp), bytes(udp)])
    assert [f[10:] for f in frames] == [bytes(udp)] * 2


def datagram(payload: bytes, sport: int = 5000, ttl: int = 64, ipv6: bool = False) -> bytes:
    udp = struct.pack("!HHHH", sport, 53, 8 + len(payload), 0) + payload
    if ipv6:
        return struct.pack("!IHBB", 6 << 28, len(udp), 17, ttl) + bytes(range(32)) + udp
    ip = bytearray(ip_before_tcp(len(udp)))
    ip[8], ip[9] = ttl, 17
    ip[10:12] = b"\0\0"
    ip[10:12] = reference.internet_checksum(bytes(ip)).to_bytes(2, "big")
    return bytes(ip) + udp


def test_a_run_of_one_udp_flow_becomes_one_uso_write_that_the_kernel_splits_back():
    for ipv6 in (False, True):
        parts = [bytes([i]) * 64 for i in range(7)] + [b"tail"]
        packets = [datagram(p, ipv6=ipv6) for p in parts]
        (frame,) = coalesce(packets, udp=True)
        assert frame[0] == 1 and frame[1] == 5                   # NEEDS_CSUM, UDP_L4
        assert struct.unpack("<HHHH", frame[2:10]) == ((40 if ipv6 else 20) + 8, 64,
                                                        40 if ipv6 else 20, 6)
        # the partial checksum completed over the whole super-datagram verifies
        (whole,) = segment(frame[:1] + b"\0" + frame[2:])
        assert reference.udp_checksum_ok(whole)
        # and the kernel's cut gives back every datagram
        back = reference.udp_segment(frame)
        hl = 48 if ipv6 else 28
        assert [p[hl:] for p in back] == parts
        assert all(reference.udp_checksum_ok(p) for p in back)
        assert [p[hl - 8:hl - 4] for p in back] == [p[hl - 8:hl - 4] for p in packets]


def test_udp_runs_break_at_another_flow_a_bigger_datagram_or_other_ttl():
    one = b"x" * 100
    for packets in ([datagram(one), datagram(one, sport=1)],            # another flow
                    [datagram(b"x" * 50), datagram(one)],               # short, then more
                    [datagram(one), datagram(b"x" * 101)],              # bigger
                    [datagram(one), datagram(one, ttl=3)],              # other TTL
                    [datagram(b""), datagram(b"")]):                    # empty: no gso_size
        frames = coalesce(packets, udp=True)
        assert [f[10:] for f in frames] == packets                       # written unchanged
    plain = [datagram(one), datagram(one)]
    assert [f[10:] for f in coalesce(plain)] == plain                    # USO not allowed
