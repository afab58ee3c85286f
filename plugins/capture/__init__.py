"""capture: a size-bounded pcap file per vWire (stage.pyx copies packets into a ring; the
file is written on the slow path, every flush).

    config: {path: /var/lib/nsmd/capture/{endpoint}-{connection}.pcap, max_bytes: 10000000}

`{connection}` (the vWire's id, first 8 characters) and `{endpoint}` are filled in; a
path without `{connection}` gets `-{connection}` before its extension, so each vWire has
its own file. Files are pcap (LINKTYPE_RAW: IP packets), 0600; once a file reaches
max_bytes, its vWire is captured no more. Both directions go to the same file.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import time
from typing import Any

from nsmd.errors import ValidationError
from nsmd.model import Connection
from nsmd.plugins.api import Function, VWireFunction

DEFAULT_PATH = "/var/lib/nsmd/capture/{endpoint}-{connection}.pcap"
RING_BYTES = 4 << 20
LINKTYPE_RAW = 101
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
RECORD = struct.Struct("<IIII")


@dataclasses.dataclass
class Config:
    path: str = DEFAULT_PATH
    max_bytes: int = 10_000_000


class Capture(Function):
    name = "capture"
    Config = Config

    def check(self) -> None:
        cfg = self.config
        if not os.path.isabs(cfg.path) or not cfg.path.endswith(".pcap"):
            raise ValidationError(f"{self.where}.config.path", "an absolute path ending in "
                                  ".pcap", cfg.path)
        if cfg.max_bytes < len(PCAP_HEADER) + 100:
            raise ValidationError(f"{self.where}.config.max_bytes", "at least 124 bytes",
                                  cfg.max_bytes)

    def path_for(self, conn: Connection) -> str:
        path = self.config.path
        if "{connection}" not in path:
            path = path[:-len(".pcap")] + "-{connection}.pcap"
        return path.format(connection=conn.id[:8], endpoint=conn.network_service_endpoint_name)

    def attach(self, conn: Connection) -> VWireFunction:
        from nsmd.plugins.capture.stage import CaptureStage

        writer = PcapWriter(self.path_for(conn), self.config.max_bytes)
        stage = CaptureStage(RING_BYTES, writer)
        return stage

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


class PcapWriter:
    """Appends pcap records to one file until it holds max_bytes (then says so)."""

    def __init__(self, path: str, max_bytes: int):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.write(self.fd, PCAP_HEADER)
        self.written = len(PCAP_HEADER)
        self.max_bytes = max_bytes
        self.path = path
        # monotonic -> wall clock, for the record timestamps
        self.offset = time.time() - time.monotonic()

    def __call__(self, when: float, orig_len: int, data: bytes) -> bool:
        record = RECORD.size + len(data)
        if self.fd < 0 or self.written + record > self.max_bytes:
            self.close()
            return False
        stamp = when + self.offset
        os.write(self.fd, RECORD.pack(int(stamp), int(stamp % 1 * 1e6), len(data), orig_len)
                 + data)
        self.written += record
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
