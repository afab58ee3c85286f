"""Keyed one-shot timers whose expiry runs a coroutine: arm, re-arm, disarm, stop all.

Refresh, timeout and hosting each keep one timer per connection or endpoint; this is
the one place that pairs timers with the tasks they start and keeps both cancellable.
All keys share one clock timer set for the earliest deadline and a heap behind it: a
timer handle and a closure per key would cost about a kilobyte per vWire.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable

from nsmd.clock import Clock, Timer


class TimerSet:
    def __init__(self, clock: Clock, action: Callable[[str], Awaitable[object]]):
        self.clock = clock
        self.action = action
        self._when: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []   # may hold stale entries (re-armed keys)
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task] = set()

    def arm(self, key: str, when: float) -> None:
        """(Re)schedules action(key) at `when` (clock time)."""
        self._when[key] = when
        heapq.heappush(self._heap, (when, key))
        self._compact()
        self._schedule()

    def disarm(self, key: str) -> None:
        self._when.pop(key, None)  # its heap entry goes stale and is skipped
        self._compact()

    def _compact(self) -> None:
        """Drops stale heap entries once they outnumber the live ones: each would keep its
        key until its deadline (minutes), so connect/close churn grew the heap."""
        if len(self._heap) > 2 * len(self._when) + 64:
            self._heap = [(when, key) for key, when in self._when.items()]
            heapq.heapify(self._heap)

    def armed(self) -> dict[str, float]:
        return dict(self._when)

    def stop(self) -> None:
        self._when.clear()
        self._heap.clear()
        self._cancel()
        for task in self._tasks:
            task.cancel()

    def _schedule(self) -> None:
        heap = self._heap
        while heap and self._when.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            self._cancel()
            return
        if self._timer_at != heap[0][0]:
            self._cancel()
            self._timer_at = heap[0][0]
            self._timer = self.clock.call_at(self._timer_at, self._fire_due)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _fire_due(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.clock.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            if self._when.get(key) != when:
                continue
            del self._when[key]
            task = asyncio.ensure_future(self.action(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._schedule()
