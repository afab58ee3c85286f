"""heal (client side): brings back a connection whose path broke (NSM: common/heal).

Started when a refresh fails or the manager drops the connection (its endpoint went
away, its timeout fired, its service's matches changed, liveness found its data plane
dead). Each attempt first asks the data-plane probe:
- alive (only the control plane failed): restore, i.e. request the same path again; the
  wire, the interfaces and the addresses stay, and nothing is closed;
- dead: reselect, i.e. close what is left and request the service again without naming
  the endpoint, keeping the IP context so the new endpoint's IPAM may give the client
  its addresses back.
Attempts repeat every RETRY_S, the pause growing to MAX_RETRY_S, on the daemon's clock,
until one succeeds or the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nsmd.clock import Clock, backoff
from nsmd.errors import NsmdError
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection

RETRY_S = 0.2       # NSM retries every 200 ms
MAX_RETRY_S = 1.0   # ... and a path that comes back heals within a second
log = logging.getLogger("nsmd.manager.heal")

Probe = Callable[[Connection], "str | None"]


class Heal(Element):
    def __init__(self, clock: Clock, begin: Begin, probe: Probe = lambda conn: None,
                 retry_s: float = RETRY_S, max_retry_s: float = MAX_RETRY_S,
                 on_reselect: Callable[[Connection], object] = lambda conn: None):
        self.clock = clock
        self.begin = begin
        self.probe = probe      # why the data plane is dead, or None while it lives
        self.on_reselect = on_reselect  # told of the connection about to leave its endpoint
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self._healing: dict[str, asyncio.Task] = {}
        self.healed = {"restore": 0, "reselect": 0}   # attempts that healed, by how
        self.failed = {"restore": 0, "reselect": 0}   # ... and that failed (retried)

    def start(self, conn_id: str, dead: str | None = None) -> None:
        """Starts healing `conn_id` unless it is already being healed. `dead`: why its data
        plane is known to be dead already (the first attempt reselects without asking)."""
        if conn_id in self._healing or conn_id not in self.begin:
            return
        self._healing[conn_id] = asyncio.ensure_future(self._heal(conn_id, dead))

    def on_server_dropped(self, server_conn: Connection, _owner: object = None) -> None:
        """The manager closed a connection on its own: heal the client side it belongs to
        (its data plane went with it)."""
        segments = server_conn.path.path_segments
        if segments:
            self.start(segments[0].id, dead="the manager closed its path")

    def stop(self) -> None:
        for task in self._healing.values():
            task.cancel()

    def healing(self) -> set[str]:
        return set(self._healing)

    def counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Healed and failed attempts by how, and the connections healing now."""
        return dict(self.healed), dict(self.failed), len(self._healing)

    async def close(self, conn: Connection, nxt: Next) -> None:
        task = self._healing.pop(conn.id, None)
        if task is not None:
            task.cancel()
        await nxt.close(conn)

    async def _heal(self, conn_id: str, known_dead: str | None) -> None:
        pause = backoff(self.clock, self.retry_s, self.max_retry_s)
        try:
            while (conn := self.begin.get(conn_id)) is not None:
                dead, known_dead = known_dead or self.probe(conn), None
                how = "restore" if dead is None else "reselect"
                if dead is not None:
                    self.on_reselect(conn)
                try:
                    healed = await self.begin.request_again(conn_id, reselect=dead is not None)
                except NsmdError as err:
                    self.failed[how] += 1
                    log.warning("healing %s: %s failed (%s%s); next try in %.1f s", conn_id,
                                how, err, f"; data plane: {dead}" if dead else "", pause.next_s)
                    await pause.wait()
                    continue
                if healed is not None:
                    self.healed[how] += 1
                    log.info("healed %s by %s: on endpoint %s", conn_id, how,
                             healed.network_service_endpoint_name)
                return
        finally:
            self._healing.pop(conn_id, None)
