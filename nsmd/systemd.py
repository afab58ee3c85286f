"""systemd's notify protocol (sd_notify): READY, STATUS, STOPPING and WATCHDOG messages.

Under `Type=notify` systemd passes NOTIFY_SOCKET (a datagram socket; a leading "@" is the
abstract namespace) and, with WatchdogSec=, WATCHDOG_USEC. The protocol is a few
newline-separated KEY=VALUE lines per datagram, so it is written out here rather than
pulling in libsystemd. Without NOTIFY_SOCKET every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from nsmd.clock import Clock, every

log = logging.getLogger("nsmd.systemd")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) and mine else None

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError as err:  # systemd gone or a wrong socket: nothing to stop for
            log.warning("systemd notification to %s failed: %s", self.address, err)
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    async def watchdog(self, clock: Clock, stopping: asyncio.Event,
                       healthy: Callable[[], bool]) -> None:
        """Pets the watchdog at half its period while `healthy()` holds: a stuck event loop
        or a dead packet engine stops the pets, and systemd restarts the daemon."""
        if self.watchdog_s is None or not self.address:
            return
        async for _ in every(clock, self.watchdog_s / 2, stopping):
            if healthy():
                self.send("WATCHDOG=1")
            else:
                log.error("not petting systemd's watchdog: the packet engines stopped")
