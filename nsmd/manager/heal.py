"""heal (client side): brings back a connection whose path broke.

When a refresh fails or the manager drops the connection (its endpoint went away, its
timeout fired), the client reselects: closes what is left and requests the service again
without naming the endpoint (NSM: begin's reselect). Attempts repeat with a growing pause
until one succeeds or the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging

from nsmd.clock import Clock
from nsmd.errors import NsmdError
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection

FIRST_RETRY_S = 0.2   # NSM retries every 200 ms
MAX_RETRY_S = 5.0
log = logging.getLogger("nsmd.manager.heal")


class Heal(Element):
    def __init__(self, clock: Clock, begin: Begin):
        self.clock = clock
        self.begin = begin
        self._healing: dict[str, asyncio.Task] = {}

    def start(self, conn_id: str) -> None:
        """Starts healing `conn_id` unless it is already being healed."""
        if conn_id in self._healing or self.begin.get(conn_id) is None:
            return
        self._healing[conn_id] = asyncio.ensure_future(self._heal(conn_id))

    def on_server_dropped(self, server_conn: Connection) -> None:
        """The manager closed a connection on its own: heal the client side it belongs to."""
        segments = server_conn.path.path_segments
        if segments:
            self.start(segments[0].id)

    def stop(self) -> None:
        for task in self._healing.values():
            task.cancel()

    def healing(self) -> set[str]:
        return set(self._healing)

    async def close(self, conn: Connection, nxt: Next) -> None:
        task = self._healing.pop(conn.id, None)
        if task is not None:
            task.cancel()
        await nxt.close(conn)

    async def _heal(self, conn_id: str) -> None:
        pause = FIRST_RETRY_S
        try:
            while self.begin.get(conn_id) is not None:
                try:
                    conn = await self.begin.request_again(conn_id, reselect=True)
                except NsmdError as err:
                    log.warning("healing %s: reselect failed (%s); next try in %.1f s",
                                conn_id, err, pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, MAX_RETRY_S)
                    continue
                if conn is not None:
                    log.info("healed %s: now on endpoint %s", conn_id,
                             conn.network_service_endpoint_name)
                return
        finally:
            self._healing.pop(conn_id, None)
