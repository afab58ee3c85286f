"""Packets for fast-path tests: bare IP headers for the classifier, and checksummed IP
headers in front of TCP segments for the offload paths (100.64.0.1 -> 100.64.0.2)."""

from __future__ import annotations

import struct

from nsmd.fastpath import reference


def ipv4(payload: bytes = b"x" * 20, total: int | None = None) -> bytes:
    """Version and length only; `total` overrides the length field (to make it lie)."""
    length = 20 + len(payload) if total is None else total
    return bytes([0x45, 0, length >> 8, length & 0xFF]) + bytes(16) + payload


def ipv6(payload: bytes = b"y" * 8) -> bytes:
    return bytes([0x60, 0, 0, 0, 0, len(payload), 17, 64]) + bytes(32) + payload


def ip_before_tcp(l4_bytes: int, ipv6: bool = False, ident: int = 1,
                  frag: int = 0x4000) -> bytes:
    """The IP header for `l4_bytes` of TCP header and payload, IPv4 checksum filled in."""
    if ipv6:
        return struct.pack("!IHBB", 6 << 28, l4_bytes, 6, 64) + bytes(range(32))
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, (20 + l4_bytes) & 0xFFFF, ident,
                                   frag, 64, 6, 0, bytes([100, 64, 0, 1]),
                                   bytes([100, 64, 0, 2])))
    header[10:12] = reference.internet_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header)


# -- whole IPv4 flows (addresses, ports, checksums), for function stages ---------------------

PROTO = {"icmp": 1, "tcp": 6, "udp": 17}


def ipv4_flow(proto: str, src: str, dst: str, sport: int = 0, dport: int = 0,
              payload: bytes = b"data", tcp_flags: int = 0x18, icmp_type: int = 8) -> bytes:
    """One IPv4 packet with valid IP and L4 checksums. ICMP: an echo (`icmp_type` 8 or 0)
    whose identifier is `sport`."""
    import ipaddress

    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    number = PROTO[proto]
    if proto == "icmp":
        l4 = bytearray(struct.pack("!BBHHH", icmp_type, 0, 0, sport, 1) + payload)
        l4[2:4] = reference.internet_checksum(bytes(l4)).to_bytes(2, "big")
    elif proto == "udp":
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
        l4[6:8] = _l4_checksum(s, d, number, bytes(l4)).to_bytes(2, "big")
    else:
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, tcp_flags,
                                   65535, 0, 0) + payload)
        l4[16:18] = _l4_checksum(s, d, number, bytes(l4)).to_bytes(2, "big")
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64,
                                   number, 0, s, d))
    header[10:12] = reference.internet_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header) + bytes(l4)


def _l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    return reference.internet_checksum(pseudo + segment)


def checksums_ok(packet: bytes) -> bool:
    """IPv4 header and TCP/UDP/ICMP checksums of a packet all verify."""
    ihl = (packet[0] & 0x0F) * 4
    if reference.internet_checksum(packet[:ihl]) != 0:
        return False
    proto, l4 = packet[9], packet[ihl:]
    if proto == 1:
        return reference.internet_checksum(l4) == 0
    return _l4_checksum(packet[12:16], packet[16:20], proto, l4) == 0


def addresses(packet: bytes) -> tuple[str, str, int, int]:
    """(src, dst, sport or ICMP id, dport) of an IPv4 packet."""
    import ipaddress

    ihl = (packet[0] & 0x0F) * 4
    src, dst = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
    if packet[9] == 1:
        ident = int.from_bytes(packet[ihl + 4:ihl + 6], "big")
        return src, dst, ident, ident
    return src, dst, int.from_bytes(packet[ihl:ihl + 2], "big"), int.from_bytes(
        packet[ihl + 2:ihl + 4], "big")


def arrives(sender, receiver, packet: bytes) -> bool:
    """Whether `packet` sent into one faked TUN comes out of the other unchanged."""
    sender.send(packet)
    try:
        return receiver.recv(70000) == packet
    except TimeoutError:
        return False
