"""Software TSO against a readable reference, and every segment's checksums verified."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsmd.fastpath import reference
from nsmd.fastpath.offload import segment
from nsmd.testing.packets import ip_before_tcp


def tcp_packet(payload: bytes, ipv6: bool, options: int = 12, flags: int = 0x18,
               seq: int = 1000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 77, (5 + options // 4) << 4, flags,
                      65000, 0, 0) + bytes(options)
    return ip_before_tcp(len(tcp) + len(payload), ipv6, ident=0x1234) + tcp + payload


def vnet(gso_type: int, mss: int, flags: int = 1, csum_start: int = 0, csum_offset: int = 0):
    return struct.pack("<BBHHHH", flags, gso_type, 0, mss, csum_start, csum_offset)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 20000), mss=st.integers(500, 1448), ipv6=st.booleans(),
       options=st.sampled_from([0, 12, 20]), flags=st.sampled_from([0x10, 0x18, 0x19, 0x98]),
       seq=st.integers(0, 2**32 - 1))
def test_segments_match_the_reference_and_verify(size, mss, ipv6, options, flags, seq):
    payload = bytes((i * 7) & 0xFF for i in range(size))
    packet = tcp_packet(payload, ipv6, options, flags, seq)
    fast = segment(vnet(4 if ipv6 else 1, mss) + packet)
    assert fast == reference.segment(packet, mss, ipv6)
    assert all(reference.tcp_checksum_ok(p) for p in fast)
    assert b"".join(p[(40 if ipv6 else 20) + 20 + options:] for p in fast) == payload


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 9000), mss=st.integers(500, 1448), ipv6=st.booleans())
def test_segments_for_a_peer_that_takes_partial_checksums(size, mss, ipv6):
    packet = tcp_packet(bytes((i * 5) & 0xFF for i in range(size)), ipv6)
    fast = segment(vnet(4 if ipv6 else 1, mss) + packet, csum_partial=True)
    assert fast == reference.segment(packet, mss, ipv6, csum_partial=True)
    full = reference.segment(packet, mss, ipv6)
    ip_len = 40 if ipv6 else 20
    for part, whole in zip(fast, full, strict=True):
        # only the TCP checksum differs, and finishing it gives the full one
        assert part[:ip_len + 16] == whole[:ip_len + 16]
        assert part[ip_len + 18:] == whole[ip_len + 18:]
        (done,) = segment(vnet(0, 0, flags=1, csum_start=ip_len, csum_offset=16) + part)
        assert done == whole


def test_a_tcp_packet_written_alone_leaves_its_checksum_to_the_kernel():
    from nsmd.fastpath.gro import csum_to_kernel

    for ipv6 in (False, True):
        whole = tcp_packet(b"ack", ipv6)
        fixed = reference.segment(whole, 1400, ipv6)[0]          # full checksum
        ip_len = 40 if ipv6 else 20
        partial = reference.segment(whole, 1400, ipv6, csum_partial=True)[0]
        for sent in (fixed, partial, fixed[:ip_len + 16] + b"\xde\xad" + fixed[ip_len + 18:]):
            frame = csum_to_kernel(sent)   # whatever the sender put in the field
            assert frame[:10] == vnet(0, 0, flags=1, csum_start=ip_len, csum_offset=16)
            assert frame[10:] == partial
    udp = bytearray(tcp_packet(b"x", False))
    udp[9] = 17
    assert csum_to_kernel(bytes(udp)) == bytes(10) + bytes(udp)          # not TCP: as is
    fragment = bytearray(tcp_packet(b"x", False))
    fragment[6] = 0x20                                                    # more fragments
    assert csum_to_kernel(bytes(fragment)) == bytes(10) + bytes(fragment)


def with_partial_checksum(payload: bytes) -> bytes:
    """What the kernel hands over with NEEDS_CSUM: the pseudo-header sum in the field."""
    packet = bytearray(tcp_packet(payload, ipv6=False))
    pseudo = packet[12:20] + b"\0\x06" + (len(packet) - 20).to_bytes(2, "big")
    partial = ~reference.internet_checksum(bytes(pseudo)) & 0xFFFF
    packet[36:38] = partial.to_bytes(2, "big")
    return bytes(packet)


def test_a_partial_checksum_is_completed():
    packet = with_partial_checksum(b"hello world")
    (done,) = segment(vnet(0, 0, flags=1, csum_start=20, csum_offset=16) + packet)
    assert reference.tcp_checksum_ok(done)
    (untouched,) = segment(vnet(0, 0, flags=0) + packet)
    assert untouched == packet


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=3000) | st.integers(0, 3000).map(lambda n: b"\xff" * n))
def test_checksums_of_any_bytes_match_the_reference(payload):
    # word-at-a-time summing: every length mod 8, and runs of 0xFF that carry on every add
    (done,) = segment(vnet(0, 0, flags=1, csum_start=20, csum_offset=16)
                      + with_partial_checksum(payload))
    assert reference.tcp_checksum_ok(done)


@pytest.mark.parametrize("frame", [
    vnet(1, 1400) + b"\x45" + bytes(30),                       # too short for TCP
    vnet(1, 1400) + tcp_packet(b"x", False)[:9] + b"\x11" + bytes(40),  # not TCP
    vnet(3, 1400) + tcp_packet(b"x", False),                   # UDP GSO: not offered
    vnet(1, 0) + tcp_packet(b"x", False),                      # no MSS
])
def test_frames_that_cannot_be_segmented_are_refused(frame):
    with pytest.raises(ValueError):
        segment(frame)
