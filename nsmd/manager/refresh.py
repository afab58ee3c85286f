"""refresh (client side): requests each connection again at 1/3 of its remaining lifetime.

The lifetime is the earliest `expires` on the path, so every hop's token is renewed before
any of them lapses (NSM: common/refresh/client.go). A failed refresh hands the connection
to heal.
"""

from __future__ import annotations

import logging

from nsmd.clock import Clock
from nsmd.errors import NsmdError
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.manager.heal import Heal
from nsmd.model import Connection, NetworkServiceRequest
from nsmd.timers import TimerSet

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
        self.timers = TimerSet(clock, self._refresh)

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = await nxt.request(request)
        delay = refresh_delay(conn, self.clock.time())
        if delay is None:
            self.timers.disarm(conn.id)
        else:
            self.timers.arm(conn.id, self.clock.time() + delay)
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        self.timers.disarm(conn.id)
        await nxt.close(conn)

    def stop(self) -> None:
        self.timers.stop()

    def armed(self) -> dict[str, float]:
        return self.timers.armed()

    async def _refresh(self, conn_id: str) -> None:
        try:
            await self.begin.request_again(conn_id)
        except NsmdError as err:
            log.warning("refresh of %s failed: %s; healing", conn_id, err)
            self.heal.start(conn_id)
