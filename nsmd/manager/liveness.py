"""Liveness: finds vWires whose client or endpoint is gone and closes them in seconds.

NSM notices a dead client only when its token expires (10 min). Here a vWire is dead when
the network namespace of either side no longer exists (the workload went away) or the
engine saw its device fail. A dead client's connection is closed; a dead endpoint's
connection is dropped by the manager, so its client heals onto another endpoint, and the
endpoint is withdrawn from the registry until its namespace is back.
"""

from __future__ import annotations

import asyncio
import logging

from nsmd import netns
from nsmd.dataplane import Dataplane
from nsmd.errors import NsmdError
from nsmd.hosting import Hosting
from nsmd.manager.build import Manager

CHECK_INTERVAL_S = 1.0
log = logging.getLogger("nsmd.manager.liveness")


class Liveness:
    def __init__(self, manager: Manager, dataplane: Dataplane, hosting: Hosting):
        self.manager = manager
        self.dataplane = dataplane
        self.hosting = hosting

    async def check_once(self) -> list[str]:
        """Closes every dead vWire; returns the ids of the connections it closed."""
        await self.hosting.check_namespaces()
        closed = []
        for conn in self.manager.server_begin.connections():
            if not conn.path.path_segments:
                continue
            wire = self.dataplane.get(conn.path.path_segments[-1].id)
            if wire is None:
                continue
            stats = self.dataplane.stats(wire.conn_id) or {"dead": {}}
            client_dead = not netns.exists(wire.client.netns) or stats["dead"].get("client")
            endpoint_dead = (not netns.exists(wire.endpoint.netns)
                             or stats["dead"].get("endpoint"))
            try:
                if client_dead:
                    log.info("vWire %s: the client's namespace %r is gone, closing", conn.id,
                             wire.client.netns)
                    await self._close_client(conn.path.path_segments[0].id, conn.id)
                elif endpoint_dead:
                    log.info("vWire %s: endpoint %s (namespace %r) is gone, reselecting",
                             conn.id, conn.network_service_endpoint_name, wire.endpoint.netns)
                    await self.manager.server_begin.close_by_id(conn.id)
                else:
                    continue
            except NsmdError as err:
                log.warning("closing dead vWire %s failed: %s", conn.id, err)
                continue
            closed.append(conn.id)
        return closed

    async def run(self, stopping: asyncio.Event, interval_s: float = CHECK_INTERVAL_S) -> None:
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), interval_s)
            except TimeoutError:
                await self.check_once()

    async def _close_client(self, client_id: str, server_id: str) -> None:
        held = self.manager.client_begin.get(client_id)
        if held is not None:
            await self.manager.client.close(held)
        else:
            await self.manager.server_begin.close_by_id(server_id)
