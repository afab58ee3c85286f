"""monitor: connection events for MonitorConnections streams.

A subscriber first gets INITIAL_STATE_TRANSFER with every matching connection, then UPDATE
after each successful request (a DOWN update when a refresh of a known connection fails)
and DELETE after each close (NSM: common/monitor). Selectors match as NSM's do: the
service must be listed (if any are), and the selector's path segments must match a
contiguous run of the connection's path, empty fields being wildcards.
"""

from __future__ import annotations

import asyncio
import dataclasses

from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, ConnectionEvent, NetworkServiceRequest, PathSegment, State
from nsmd.model.codec import field

SUBSCRIBER_QUEUE_MAX = 10_000


@dataclasses.dataclass
class SegmentSelector:
    name: str = ""
    id: str = ""
    token: str = ""


@dataclasses.dataclass
class MonitorScopeSelector:
    path_segments: list[SegmentSelector] = field(default_factory=list)
    network_services: list[str] = field(default_factory=list)

    def matches(self, conn: Connection) -> bool:
        if self.network_services and conn.network_service not in self.network_services:
            return False
        want = self.path_segments
        if not want:
            return True
        have = conn.path.path_segments
        return any(all(_segment_matches(have[start + i], w) for i, w in enumerate(want))
                   for start in range(len(have) - len(want) + 1))


def _segment_matches(segment: PathSegment, want: SegmentSelector) -> bool:
    return all(not w or w == h for w, h in ((want.name, segment.name), (want.id, segment.id),
                                            (want.token, segment.token)))


class Subscription:
    """An async iterator of ConnectionEvent; close() when the stream ends."""

    def __init__(self, monitor: Monitor, selector: MonitorScopeSelector):
        self.selector = selector
        self._monitor = monitor
        self.queue: asyncio.Queue[ConnectionEvent | None] = asyncio.Queue(SUBSCRIBER_QUEUE_MAX)
        initial = {c.id: c for c in monitor.begin.connections() if selector.matches(c)}
        self.queue.put_nowait(ConnectionEvent(type="INITIAL_STATE_TRANSFER", connections=initial))

    def offer(self, event_type: str, conn: Connection) -> None:
        if not self.selector.matches(conn):
            return
        try:
            self.queue.put_nowait(ConnectionEvent(type=event_type, connections={conn.id: conn}))
        except asyncio.QueueFull:  # a stalled reader is cut off, not buffered forever
            self.close()
            self.queue = asyncio.Queue(1)
            self.queue.put_nowait(None)

    def __aiter__(self):
        return self

    async def __anext__(self) -> ConnectionEvent:
        event = await self.queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        self._monitor.subscribers.discard(self)


class Monitor(Element):
    """Placed after `begin`, whose memory of the connections it reads for the initial
    state (one copy of each connection per hop, not two)."""

    def __init__(self, begin: Begin) -> None:
        self.begin = begin
        self.subscribers: set[Subscription] = set()

    def subscribe(self, selector: MonitorScopeSelector) -> Subscription:
        sub = Subscription(self, selector)
        self.subscribers.add(sub)
        return sub

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        try:
            conn = await nxt.request(request)
        except Exception:
            known = self.begin.get(request.connection.id)
            if known is not None:
                known.state = State.DOWN
                self._publish("UPDATE", known)
            raise
        self._publish("UPDATE", conn.clone())
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            self._publish("DELETE", conn.clone())

    def _publish(self, event_type: str, snapshot: Connection) -> None:
        """Subscribers share `snapshot`: it is never modified after this."""
        for sub in list(self.subscribers):
            sub.offer(event_type, snapshot)
