"""refresh (client side): requests each connection again at 1/3 of its remaining lifetime.

The lifetime is the earliest `expires` on the path, so every hop's token is renewed before
any of them lapses (NSM: common/refresh/client.go). A failed refresh hands the connection
to heal.
"""

from __future__ import annotations

import asyncio
import logging

from nsmd.clock import Clock, Timer
from nsmd.errors import NsmdError
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.manager.heal import Heal
from nsmd.model import Connection, NetworkServiceRequest

REFRESH_AT = 1 / 3
log = logging.getLogger("nsmd.manager.refresh")


def refresh_delay(conn: Connection, now: float) -> float | None:
    stamps = [s.expires for s in conn.path.path_segments[conn.path.index:] if s.expires]
    if not stamps:
        return None
    return max(0.0, (min(stamps) - now) * REFRESH_AT)


class Refresh(Element):
    def __init__(self, clock: Clock, begin: Begin, heal: Heal):
        self.clock = clock
        self.begin = begin
        self.heal = heal
        self._timers: dict[str, Timer] = {}
        self._tasks: set[asyncio.Task] = set()

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = await nxt.request(request)
        self._disarm(conn.id)
        delay = refresh_delay(conn, self.clock.time())
        if delay is not None:
            self._timers[conn.id] = self.clock.call_at(
                self.clock.time() + delay, lambda cid=conn.id: self._due(cid))
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        self._disarm(conn.id)
        await nxt.close(conn)

    def stop(self) -> None:
        for conn_id in list(self._timers):
            self._disarm(conn_id)
        for task in self._tasks:
            task.cancel()

    def armed(self) -> dict[str, float]:
        return {cid: getattr(t, "when", 0.0) for cid, t in self._timers.items()}

    def _disarm(self, conn_id: str) -> None:
        timer = self._timers.pop(conn_id, None)
        if timer is not None:
            timer.cancel()

    def _due(self, conn_id: str) -> None:
        self._timers.pop(conn_id, None)
        task = asyncio.ensure_future(self._refresh(conn_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, conn_id: str) -> None:
        try:
            await self.begin.request_again(conn_id)
        except NsmdError as err:
            log.warning("refresh of %s failed: %s; healing", conn_id, err)
            self.heal.start(conn_id)
