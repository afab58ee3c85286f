"""Keyed one-shot timers whose expiry runs a coroutine: arm, re-arm, disarm, stop all.

Refresh, timeout and hosting each keep one timer per connection or endpoint; this is
the one place that pairs a clock timer with the task it starts and keeps both cancellable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nsmd.clock import Clock, Timer


class TimerSet:
    def __init__(self, clock: Clock, action: Callable[[str], Awaitable[object]]):
        self.clock = clock
        self.action = action
        self._timers: dict[str, tuple[float, Timer]] = {}
        self._tasks: set[asyncio.Task] = set()

    def arm(self, key: str, when: float) -> None:
        """(Re)schedules action(key) at `when` (clock time)."""
        self.disarm(key)
        self._timers[key] = (when, self.clock.call_at(when, lambda: self._fire(key)))

    def disarm(self, key: str) -> None:
        entry = self._timers.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    def armed(self) -> dict[str, float]:
        return {key: when for key, (when, _) in self._timers.items()}

    def stop(self) -> None:
        for key in list(self._timers):
            self.disarm(key)
        for task in self._tasks:
            task.cancel()

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        task = asyncio.ensure_future(self.action(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
