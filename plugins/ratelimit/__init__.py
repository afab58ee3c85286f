"""ratelimit: a token bucket per direction in bits/s and in packets/s (stage.pyx).

    config: {bits_per_s: 100000000, packets_per_s: 100000}   # either or both; 0: no limit
            burst_bytes, burst_packets: how much may pass at once (default: 20 ms of the
            rate, at least one 64 KiB super-packet and 64 packets)

Bits count whole IP packets; a TCP super-packet counts as the segments it leaves as.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nsmd.errors import ValidationError
from nsmd.model import Connection
from nsmd.plugins.api import Function, VWireFunction

BURST_S = 0.02
MIN_BURST_BYTES = 65536 + 1500
MIN_BURST_PACKETS = 64


@dataclasses.dataclass
class Config:
    bits_per_s: int = 0
    packets_per_s: int = 0
    burst_bytes: int = 0
    burst_packets: int = 0


class RateLimit(Function):
    name = "ratelimit"
    Config = Config

    def check(self) -> None:
        cfg = self.config
        if not cfg.bits_per_s and not cfg.packets_per_s:
            raise ValidationError(f"{self.where}.config.bits_per_s",
                                  "a limit: bits_per_s and/or packets_per_s above 0")

    def attach(self, conn: Connection) -> VWireFunction:
        from nsmd.plugins.ratelimit.stage import LimiterStage

        cfg = self.config
        burst_bits = 8 * (cfg.burst_bytes or max(cfg.bits_per_s / 8 * BURST_S, MIN_BURST_BYTES))
        burst_packets = cfg.burst_packets or max(cfg.packets_per_s * BURST_S, MIN_BURST_PACKETS)
        return LimiterStage(cfg.bits_per_s, cfg.packets_per_s, burst_bits, burst_packets)

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)
