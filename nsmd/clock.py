"""Time for the control path: wall-clock seconds and timers, replaceable by a fake in tests.

Wall time (not monotonic) because expiry stamps are stored and shared (registry
expiration_time, path segment `expires`) and must mean the same after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Runs `callback` on the event loop once time() >= when."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        delay = max(0.0, when - time.time())
        return asyncio.get_running_loop().call_later(delay, callback)
