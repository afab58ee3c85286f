"""refresh (client side): requests each connection again before any token on its path lapses.

As NSM's refresh client (common/refresh/client.go): the earliest `expires` on the path
from here on, times 1/3 for a one-segment path, else 0.2 + 0.2 * index / len (earlier for
longer paths; a client at index 0 refreshes at 1/5). A failed refresh hands the
connection to heal, which retries every 200 ms: restoring the same path while the data
plane lives, reselecting when it is dead.
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

log = logging.getLogger("nsmd.manager.refresh")


def refresh_scale(conn: Connection) -> float:
    path = conn.path
    if len(path.path_segments) <= 1:
        return 1 / 3
    return 0.2 + 0.2 * path.index / len(path.path_segments)


def refresh_delay(conn: Connection, now: float) -> float | None:
    stamps = [s.expires for s in conn.path.path_segments[conn.path.index:] if s.expires]
    if not stamps:
        return None
    return max(0.0, (min(stamps) - now) * refresh_scale(conn))


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
