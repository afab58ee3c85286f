"""timeout (server side): closes a connection whose caller stopped refreshing it.

Armed at the previous segment's `expires` after every successful request (NSM:
common/timeout/server.go); a refresh re-arms it, a close disarms it.
"""

from __future__ import annotations

import asyncio
import logging

from nsmd.clock import Clock, Timer
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest

log = logging.getLogger("nsmd.manager.timeout")


class Timeout(Element):
    def __init__(self, clock: Clock, begin: Begin):
        self.clock = clock
        self.begin = begin
        self._timers: dict[str, Timer] = {}
        self._tasks: set[asyncio.Task] = set()

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = await nxt.request(request)
        self._disarm(conn.id)
        caller = conn.path.previous()
        if caller is not None and caller.expires:
            self._timers[conn.id] = self.clock.call_at(
                caller.expires, lambda cid=conn.id: self._expired(cid))
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        self._disarm(conn.id)
        await nxt.close(conn)

    def stop(self) -> None:
        for conn_id in list(self._timers):
            self._disarm(conn_id)
        for task in self._tasks:
            task.cancel()

    def armed(self) -> set[str]:
        return set(self._timers)

    def _disarm(self, conn_id: str) -> None:
        timer = self._timers.pop(conn_id, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, conn_id: str) -> None:
        self._timers.pop(conn_id, None)
        log.info("connection %s: caller's token expired without refresh, closing", conn_id)
        task = asyncio.ensure_future(self.begin.close_by_id(conn_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
