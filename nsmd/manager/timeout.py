"""timeout (server side): closes a connection whose caller stopped refreshing it.

Armed at the previous segment's `expires` after every successful request (NSM:
common/timeout/server.go); a refresh re-arms it, a close disarms it.
"""

from __future__ import annotations

import logging

from nsmd.clock import Clock
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest
from nsmd.timers import TimerSet

log = logging.getLogger("nsmd.manager.timeout")


class Timeout(Element):
    def __init__(self, clock: Clock, begin: Begin):
        self.clock = clock
        self.begin = begin
        self.timers = TimerSet(clock, self._expired)

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = await nxt.request(request)
        caller = conn.path.previous()
        if caller is not None and caller.expires:
            self.timers.arm(conn.id, caller.expires)
        else:
            self.timers.disarm(conn.id)
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        self.timers.disarm(conn.id)
        await nxt.close(conn)

    def stop(self) -> None:
        self.timers.stop()

    def armed(self) -> set[str]:
        return set(self.timers.armed())

    async def _expired(self, conn_id: str) -> None:
        log.info("connection %s: caller's token expired without refresh, closing", conn_id)
        await self.begin.close_by_id(conn_id)
