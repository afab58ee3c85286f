"""Readable reference of the fast path's packet rules, for differential tests.

Slow on purpose: one obvious line per rule of fastpath/classify.pxd.
"""

PASS = "pass"
NOT_IP = "not_ip"
MALFORMED = "malformed"


def classify(packet: bytes) -> str:
    if len(packet) < 1:
        return MALFORMED
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20:
            return MALFORMED
        header_len = (packet[0] & 0x0F) * 4
        total_len = int.from_bytes(packet[2:4], "big")
        if header_len < 20 or total_len < header_len or total_len > len(packet):
            return MALFORMED
        return PASS
    if version == 6:
        if len(packet) < 40:
            return MALFORMED
        if 40 + int.from_bytes(packet[4:6], "big") > len(packet):
            return MALFORMED
        return PASS
    return NOT_IP


class ReplayWindow:
    """RFC 6479 semantics, spelled out: remember every counter, forget nothing."""

    def __init__(self, window: int):
        self.window = window
        self.seen: set[int] = set()
        self.newest = -1

    def would_accept(self, counter: int) -> bool:
        if counter == 2**64 - 1:
            return False
        if counter > self.newest:
            return True
        return self.newest - counter < self.window and counter not in self.seen

    def accept(self, counter: int) -> bool:
        if not self.would_accept(counter):
            return False
        self.seen.add(counter)
        self.newest = max(self.newest, counter)
        return True


def internet_checksum(data: bytes) -> int:
    """RFC 1071, one 16-bit word at a time."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_checksum_ok(packet: bytes) -> bool:
    """True if an IPv4/IPv6 TCP packet's TCP checksum (and IPv4 header checksum) verify."""
    return l4_checksum_ok(packet, 6)


def udp_checksum_ok(packet: bytes) -> bool:
    """The same for a UDP datagram (whose length may be a whole super-datagram's)."""
    return l4_checksum_ok(packet, 17)


def l4_checksum_ok(packet: bytes, proto: int) -> bool:
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        if internet_checksum(packet[:ihl]) != 0:
            return False
        segment = packet[ihl:int.from_bytes(packet[2:4], "big")]
        pseudo = packet[12:20] + bytes([0, proto]) + len(segment).to_bytes(2, "big")
    else:
        segment = packet[40:40 + int.from_bytes(packet[4:6], "big")]
        pseudo = packet[8:40] + len(segment).to_bytes(4, "big") + bytes([0, 0, 0, proto])
    return internet_checksum(pseudo + segment) == 0


def segment(packet: bytes, mss: int, ipv6: bool, csum_partial: bool = False) -> list[bytes]:
    """A TCP super-packet cut into MSS-sized segments, as a NIC doing TSO would; with
    `csum_partial` each TCP checksum field holds only its pseudo-header's sum (what a
    sending stack leaves for the NIC), for a peer that takes that."""
    ip_len = 40 if ipv6 else (packet[0] & 0x0F) * 4
    tcp_len = (packet[ip_len + 12] >> 4) * 4
    header, payload = packet[:ip_len + tcp_len], packet[ip_len + tcp_len:]
    seq = int.from_bytes(header[ip_len + 4:ip_len + 8], "big")
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        h = bytearray(header)
        tcp_flags = h[ip_len + 13]
        if i < len(chunks) - 1:
            tcp_flags &= ~(0x01 | 0x08)  # FIN, PSH only on the last segment
        if i > 0:
            tcp_flags &= ~0x80  # CWR only on the first
        h[ip_len + 13] = tcp_flags
        h[ip_len + 4:ip_len + 8] = ((seq + i * mss) & 0xFFFFFFFF).to_bytes(4, "big")
        h[ip_len + 16:ip_len + 18] = b"\0\0"
        if ipv6:
            h[4:6] = (tcp_len + len(chunk)).to_bytes(2, "big")
            pseudo = bytes(h[8:40]) + (tcp_len + len(chunk)).to_bytes(4, "big") + b"\0\0\0\x06"
        else:
            h[2:4] = (len(h) + len(chunk)).to_bytes(2, "big")
            h[4:6] = ((int.from_bytes(header[4:6], "big") + i) & 0xFFFF).to_bytes(2, "big")
            h[10:12] = b"\0\0"
            h[10:12] = internet_checksum(bytes(h[:ip_len])).to_bytes(2, "big")
            pseudo = bytes(h[12:20]) + b"\0\x06" + (tcp_len + len(chunk)).to_bytes(2, "big")
        tcp = bytes(h[ip_len:]) + chunk
        check = ~internet_checksum(pseudo) & 0xFFFF if csum_partial else \
            internet_checksum(pseudo + tcp)
        h[ip_len + 16:ip_len + 18] = check.to_bytes(2, "big")
        out.append(bytes(h) + chunk)
    return out


def udp_segment(frame: bytes) -> list[bytes]:
    """What the kernel makes of a UDP GSO (USO) write to a TUN device: virtio_net_hdr
    (NEEDS_CSUM, gso_type 5, gso_size) + one super-datagram, cut into datagrams of
    gso_size payload bytes, each with its own lengths and full checksums (IPv4 ids
    counting up from the super-datagram's)."""
    gso_size = int.from_bytes(frame[4:6], "little")
    packet = frame[10:]
    ipv6 = packet[0] >> 4 == 6
    ip_len = 40 if ipv6 else (packet[0] & 0x0F) * 4
    header, payload = packet[:ip_len + 8], packet[ip_len + 8:]
    out = []
    for i, start in enumerate(range(0, len(payload), gso_size)):
        chunk = payload[start:start + gso_size]
        h = bytearray(header)
        h[ip_len + 4:ip_len + 6] = (8 + len(chunk)).to_bytes(2, "big")
        h[ip_len + 6:ip_len + 8] = b"\0\0"
        if ipv6:
            h[4:6] = (8 + len(chunk)).to_bytes(2, "big")
            pseudo = bytes(h[8:40]) + (8 + len(chunk)).to_bytes(4, "big") + b"\0\0\0\x11"
        else:
            h[2:4] = (ip_len + 8 + len(chunk)).to_bytes(2, "big")
            h[4:6] = ((int.from_bytes(header[4:6], "big") + i) & 0xFFFF).to_bytes(2, "big")
            h[10:12] = b"\0\0"
            h[10:12] = internet_checksum(bytes(h[:ip_len])).to_bytes(2, "big")
            pseudo = bytes(h[12:20]) + b"\0\x11" + (8 + len(chunk)).to_bytes(2, "big")
        check = internet_checksum(pseudo + bytes(h[ip_len:]) + chunk) or 0xFFFF
        h[ip_len + 6:ip_len + 8] = check.to_bytes(2, "big")
        out.append(bytes(h) + chunk)
    return out
