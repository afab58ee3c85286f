"""Time for the control path: wall-clock seconds and timers, replaceable by a fake in tests.

Wall time (not monotonic) because expiry stamps are stored and shared (registry
expiration_time, path segment `expires`) and must mean the same after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
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


async def sleep(clock: Clock, seconds: float) -> None:
    """asyncio.sleep on `clock`: a fake clock's tests move it instead of waiting."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    timer = clock.call_at(clock.time() + seconds, wake)
    try:
        await done
    finally:
        timer.cancel()


async def every(clock: Clock, interval_s: float, stopping: asyncio.Event,
                ) -> AsyncIterator[None]:
    """Yields every `interval_s` on `clock` until `stopping` is set (which ends it at once,
    not at the next tick): the loop of the daemon's periodic checks."""
    while not stopping.is_set():
        nap = asyncio.ensure_future(sleep(clock, interval_s))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait((nap, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            stop.cancel()
        if stopping.is_set():
            return
        yield


class Backoff:
    """A retry loop's pause: `first_s`, doubled after each failed try up to `max_s`, back
    to `first_s` once a try succeeds. wait() sleeps it on the clock; step() hands it to a
    loop that waits its own way (etcd waits for its channel, at most that long)."""

    def __init__(self, clock: Clock, first_s: float, max_s: float):
        self.clock = clock
        self.first_s, self.max_s = first_s, max_s
        self.next_s = first_s   # the pause the next wait() or step() takes

    def step(self) -> float:
        pause, self.next_s = self.next_s, min(self.next_s * 2, self.max_s)
        return pause

    async def wait(self) -> None:
        await sleep(self.clock, self.step())

    def reset(self) -> None:
        self.next_s = self.first_s


def backoff(clock: Clock, first_s: float, max_s: float) -> Backoff:
    return Backoff(clock, first_s, max_s)
