"""Liveness: finds vWires whose data plane died and heals or closes them within seconds.

NSM notices a dead client only when its token expires (10 min). Here every interval the
probe (probe.py) looks at each connection's wire: a side's namespace gone, its device
failed, or its tunnel silent. A dead client's connection is closed. A dead endpoint's
connection is healed by reselecting when its client is held on this host; otherwise
(this host serves another host's client, or relays) it is closed here and the client's
host, whose tunnel falls silent, heals it. A hosted endpoint whose namespace vanished is
withdrawn from the registry until the namespace is back.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from nsmd import netns
from nsmd.clock import Clock, every
from nsmd.dataplane import Dataplane
from nsmd.errors import NsmdError
from nsmd.hosting import Hosting
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain
from nsmd.manager.heal import Heal
from nsmd.manager.probe import DataplaneProbe
from nsmd.model import Connection

log = logging.getLogger("nsmd.manager.liveness")


class Liveness:
    def __init__(self, clock: Clock, served: Begin, held: Begin, client: Chain, heal: Heal,
                 probe: DataplaneProbe, dataplane: Dataplane, hosting: Hosting,
                 interval_s: float):
        self.clock = clock
        self.served = served      # the server chain's begin: every vWire served here
        self.held = held          # the client chain's: those held for local clients
        self.client = client      # closes a held one (its client is gone)
        self.heal = heal
        self.probe = probe
        self.dataplane = dataplane
        self.hosting = hosting
        self.interval_s = interval_s
        self._closing: dict[str, asyncio.Task] = {}

    async def check_once(self) -> list[str]:
        """Starts healing or closing every dead vWire; returns the connections' ids."""
        await self.hosting.check_namespaces()
        netns.reap()
        found = []
        for conn in self.served.each():
            if not conn.path.path_segments or conn.id in self._closing:
                continue
            # ours onwards: the wire is this hop's or a later one's (a relay has two halves)
            wire = self.dataplane.wire_of([s.id for s in conn.path.path_segments[
                conn.path.index:]])
            verdict = self.probe.wire(wire) if wire is not None else None
            if verdict is None:
                continue
            found.append(conn.id)
            held = self.held.get(conn.path.path_segments[0].id)
            if held is not None and not verdict.startswith("client"):
                if held.id not in self.heal.healing():
                    log.info("vWire %s: %s; healing", conn.id, verdict)
                    self.heal.start(held.id)
                continue
            log.info("vWire %s: %s; closing", conn.id, verdict)
            task = asyncio.ensure_future(self._close(conn, held))
            self._closing[conn.id] = task
            task.add_done_callback(functools.partial(self._closed, conn.id))
        return found

    def _closed(self, conn_id: str, _task: asyncio.Task) -> None:
        self._closing.pop(conn_id, None)

    async def run(self, stopping: asyncio.Event) -> None:
        async for _ in every(self.clock, self.interval_s, stopping):
            await self.check_once()
        for task in self._closing.values():
            task.cancel()

    async def _close(self, conn: Connection, held: Connection | None) -> None:
        try:
            if held is not None:  # the client is gone: so is what it held
                await self.client.close(held)
            else:
                await self.served.close_by_id(conn.id)
        except NsmdError as err:
            log.warning("closing dead vWire %s failed: %s", conn.id, err)
