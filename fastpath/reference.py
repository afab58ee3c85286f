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
