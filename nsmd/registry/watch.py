"""Watch streams for registry Find: a snapshot first, then every change, deletions flagged."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

# A watcher that falls this far behind is cut off rather than buffered without bound.
WATCH_QUEUE_MAX = 10_000


@dataclasses.dataclass
class WatchEvent:
    item: Any
    deleted: bool = False


class Overflowed(Exception):
    """The watcher could not keep up and lost events; it must Find again."""


class Watch:
    """One subscriber: an async iterator of WatchEvent. Close it when done."""

    def __init__(self, predicate: Callable[[Any], bool], snapshot: list[Any],
                 on_close: Callable[[Watch], None]):
        self.predicate = predicate
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(WATCH_QUEUE_MAX)
        self._on_close = on_close
        self.overflowed = False
        self.snapshot_size = len(snapshot)
        for item in snapshot:
            self._queue.put_nowait(WatchEvent(item))

    def offer(self, event: WatchEvent) -> None:
        if self.overflowed or not self.predicate(event.item):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self._queue = asyncio.Queue(1)
            self._queue.put_nowait(None)

    def __aiter__(self):
        return self

    async def __anext__(self) -> WatchEvent:
        event = await self._queue.get()
        if event is None:
            raise Overflowed(f"watcher fell {WATCH_QUEUE_MAX} events behind")
        return event

    def close(self) -> None:
        self._on_close(self)


class Watchers:
    """The set of live watches of one kind of record."""

    def __init__(self) -> None:
        self._watches: set[Watch] = set()

    def open(self, predicate: Callable[[Any], bool], snapshot: list[Any]) -> Watch:
        watch = Watch(predicate, snapshot, self._watches.discard)
        self._watches.add(watch)
        return watch

    def publish(self, item: Any, deleted: bool = False) -> None:
        event = WatchEvent(item, deleted)
        for watch in list(self._watches):
            watch.offer(event)

    def __len__(self) -> int:
        return len(self._watches)
