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
