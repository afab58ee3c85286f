"""Liveness: finds vWires whose client or endpoint is gone and closes them in seconds.

NSM notices a dead client only when its token expires (10 min). Here a vWire is dead when
the network namespace of a side on this host no longer exists (the workload went away),
the engine saw its device fail, or a tunnel heard nothing from the peer host for
DEAD_AFTER_KEEPALIVES keepalive intervals (idle tunnels send keepalives). A dead client's
connection is closed; a dead endpoint's connection is dropped by the manager so its
client heals onto another endpoint, and a hosted endpoint whose namespace vanished is
withdrawn from the registry until the namespace is back.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from nsmd import netns
from nsmd.dataplane import Dataplane, Wire
from nsmd.errors import NsmdError
from nsmd.hosting import Hosting
from nsmd.manager.build import Manager
from nsmd.model import Connection

CHECK_INTERVAL_S = 1.0
DEAD_AFTER_KEEPALIVES = 4
log = logging.getLogger("nsmd.manager.liveness")


class Liveness:
    def __init__(self, manager: Manager, dataplane: Dataplane, hosting: Hosting,
                 dead_after_s: float = 4.0):
        self.manager = manager
        self.dataplane = dataplane
        self.hosting = hosting
        self.dead_after_s = dead_after_s
        self._closing: dict[str, asyncio.Task] = {}

    async def check_once(self) -> list[str]:
        """Starts closing every dead vWire; returns the ids of the connections concerned."""
        await self.hosting.check_namespaces()
        netns.reap()
        found = []
        for conn in self.manager.server_begin.peek():
            if not conn.path.path_segments or conn.id in self._closing:
                continue
            # ours onwards: the wire is this hop's or a later one's (a relay has two halves)
            wire = self.dataplane.wire_of([s.id for s in conn.path.path_segments[
                conn.path.index:]])
            if wire is None:
                continue
            verdict = self._verdict(wire)
            if verdict is None:
                continue
            log.info("vWire %s: %s; closing", conn.id, verdict)
            task = asyncio.ensure_future(self._close(conn, client_dead=verdict.startswith(
                "client")))
            self._closing[conn.id] = task
            task.add_done_callback(functools.partial(self._closed, conn.id))
            found.append(conn.id)
        return found

    def _closed(self, conn_id: str, _task: asyncio.Task) -> None:
        self._closing.pop(conn_id, None)

    async def run(self, stopping: asyncio.Event, interval_s: float = CHECK_INTERVAL_S) -> None:
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), interval_s)
            except TimeoutError:
                await self.check_once()
        for task in self._closing.values():
            task.cancel()

    def _verdict(self, wire: Wire) -> str | None:
        """Why the wire is dead ("client ..." / "endpoint ..."), or None if it is alive."""
        stats = self.dataplane.stats(wire.conn_id) or {"dead": {}}
        for role, side in (("client", wire.client), ("endpoint", wire.endpoint)):
            if side is not None and not netns.exists(side.netns):
                return f"{role} namespace {side.netns!r} is gone"
            if side is not None and stats["dead"].get(role):
                return f"{role} device failed"
        tunnel = stats.get("tunnel")
        if tunnel is not None and wire.keyed:
            silent = tunnel["last_rx_age_s"]
            silent = stats["age_s"] if silent is None else silent
            if silent > self.dead_after_s:
                far = "endpoint" if wire.client is not None or wire.side == 1 else "client"
                return f"{far} host silent for {silent:.1f} s"
        return None

    async def _close(self, conn: Connection, client_dead: bool) -> None:
        try:
            held = self.manager.client_begin.get(conn.path.path_segments[0].id) \
                if client_dead else None
            if held is not None:
                await self.manager.client.close(held)
            else:
                await self.manager.server_begin.close_by_id(conn.id)
        except NsmdError as err:
            log.warning("closing dead vWire %s failed: %s", conn.id, err)
