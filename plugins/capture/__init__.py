"""capture: a size-bounded pcap file per vWire (stage.pyx copies packets into a ring; the
file is written on the slow path, every flush).

    config: {path: "{endpoint}-{connection}.pcap", max_bytes: 10000000}

Files go to the daemon's capture directory (`<state-dir>/capture`, 0700) and nowhere
else: `path` is a file name, in which `{connection}` (the vWire's id, first 8 characters)
and `{endpoint}` are filled in (nothing else is: it is not a format string); a name without
`{connection}` gets `-{connection}` before its extension, so each vWire has its own file.
A file is created anew (never through a link, never an existing file's contents kept),
pcap (LINKTYPE_RAW: IP packets), 0600; once it reaches max_bytes, or the daemon's
`capture-max-bytes` if that is less, its vWire is captured no more. Both directions go to
the same file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import time
from typing import Any

from nsmd.errors import ValidationError
from nsmd.model import Connection
from nsmd.plugins.api import Function, VWireFunction

DEFAULT_PATH = "{endpoint}-{connection}.pcap"
RING_BYTES = 4 << 20
LINKTYPE_RAW = 101
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
RECORD = struct.Struct("<IIII")
# a file name: letters, digits, . _ - @, and the two fields; never a leading dot
NAME = re.compile(r"(?!\.)(?:[A-Za-z0-9._@-]|\{endpoint\}|\{connection\})+\.pcap")
UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


@dataclasses.dataclass
class Config:
    path: str = DEFAULT_PATH
    max_bytes: int = 10_000_000


class Capture(Function):
    name = "capture"
    Config = Config

    def check(self) -> None:
        cfg = self.config
        if not NAME.fullmatch(cfg.path):
            raise ValidationError(f"{self.where}.config.path", "a file name ending in .pcap "
                                  "(letters, digits, ._@-, {endpoint}, {connection}); "
                                  "captures go to the daemon's capture directory", cfg.path)
        if cfg.max_bytes < len(PCAP_HEADER) + 100:
            raise ValidationError(f"{self.where}.config.max_bytes", "at least 124 bytes",
                                  cfg.max_bytes)

    def file_name(self, conn: Connection) -> str:
        name = self.config.path
        if "{connection}" not in name:
            name = name[:-len(".pcap")] + "-{connection}.pcap"
        fields = {"{connection}": conn.id[:8], "{endpoint}": conn.network_service_endpoint_name}
        return re.sub(r"\{(?:connection|endpoint)\}",
                      lambda m: UNSAFE.sub("_", fields[m.group(0)]), name)

    def attach(self, conn: Connection) -> VWireFunction:
        from nsmd.plugins.capture.stage import CaptureStage

        if self.host is None:
            raise RuntimeError("capture: no FunctionHost set (the daemon sets one)")
        writer = PcapWriter(self.host.files_dir(self.name), self.file_name(conn),
                            min(self.config.max_bytes, self.host.max_file_bytes))
        stage = CaptureStage(RING_BYTES, writer)
        return stage

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


class PcapWriter:
    """Appends pcap records to one new file in `directory` until it holds max_bytes (then
    says so). Neither the directory nor the file is reached through a symbolic link; an
    earlier file of that name (this vWire's, before a restart) is unlinked, not reused."""

    def __init__(self, directory: str, name: str, max_bytes: int):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            self.fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        path = os.path.join(directory, name)
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
