"""A clock that only moves when the test says so; timers fire in time order on advance()."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def pending(self) -> list[FakeTimer]:
        return sorted((t for _, _, t in self._timers if not t.cancelled), key=lambda t: t.when)

    def advance(self, seconds: float) -> int:
        """Moves time forward, firing due timers in order; returns how many fired."""
        target = self.now + seconds
        fired = 0
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback()
            fired += 1
        self.now = target
        return fired

    async def run(self, seconds: float, settle_rounds: int = 10) -> int:
        """Like advance(), but lets the tasks each timer starts run (and arm new timers)
        before moving on: for code whose timers spawn coroutines."""
        target = self.now + seconds
        fired = 0
        while True:
            await _settle(settle_rounds)
            live = [t for _, _, t in self._timers if not t.cancelled]
            due = min((t.when for t in live), default=None)
            if due is None or due > target:
                break
            fired += self.advance(max(0.0, due - self.now))
        self.now = target
        await _settle(settle_rounds)
        return fired


async def _settle(rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)

