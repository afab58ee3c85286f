"""Gives the C heap's free memory back to the kernel once the API goes quiet after work.

glibc keeps what the process frees (Python objects over 512 bytes, dict and set tables,
SQLite's and OpenSSL's buffers) for reuse, and a burst of requests leaves much of it
free for good: after 1,000 concurrent connects the daemon stayed ~25 MiB larger than it
needed to. malloc_trim(0) hands the free pages back (madvise). It runs on a thread
(ctypes lets go of the GIL) a second after the last request of a burst; where there is
no glibc (no malloc_trim) this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from collections.abc import Callable

QUIET_S = 1.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


malloc_trim = _find_malloc_trim()


class HeapTrimmer:
    def __init__(self, quiet_s: float = QUIET_S):
        self.quiet_s = quiet_s
        self.trims = 0
        self._pending = False
        self._last = 0.0

    def touch(self) -> None:
        """Work happened (an API request): trim once it has been quiet for quiet_s."""
        self._pending = True
        self._last = time.monotonic()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping` is set (the daemon's stop awaits this)."""
        if malloc_trim is None:
            return
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.quiet_s / 2)
            if self._pending and time.monotonic() - self._last >= self.quiet_s:
                self._pending = False
                await asyncio.to_thread(malloc_trim, 0)
                self.trims += 1
