"""The bridge to the fast path: the only control-path module that imports nsmd.fastpath.

Owns the packet engine and the TUN devices of every vWire. A local vWire is two TUN
devices, one in the client's namespace and one in the endpoint's, joined in the engine.
Devices are persistent, and each wire is recorded in the state database, so a restarted
daemon re-attaches to them (restore) and removes those nobody claims (sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os

from nsmd import netns, tundev
from nsmd.errors import DataplaneError
from nsmd.fastpath.engine import Engine
from nsmd.state import StateDB

log = logging.getLogger("nsmd.dataplane")


@dataclasses.dataclass
class Side:
    netns: str      # "" = the daemon's own namespace
    ifname: str     # the device's actual name
    addresses: list[str]


@dataclasses.dataclass
class Wire:
    conn_id: str
    client: Side
    endpoint: Side
    mtu: int
    handle: int = 0
    fds: tuple[int, int] = (-1, -1)

    def record(self) -> dict:
        return {"client": dataclasses.asdict(self.client),
                "endpoint": dataclasses.asdict(self.endpoint), "mtu": self.mtu}


class Dataplane:
    def __init__(self, db: StateDB):
        self.db = db
        self.engine = Engine()
        self.wires: dict[str, Wire] = {}

    def start(self) -> None:
        self.engine.start()

    def get(self, conn_id: str) -> Wire | None:
        return self.wires.get(conn_id)

    async def connect_local(self, conn_id: str, client_ns: str, client: tundev.InterfaceConfig,
                            client_exclusive: bool, endpoint_ns: str,
                            endpoint: tundev.InterfaceConfig) -> Wire:
        """Creates both devices and joins them; on any failure nothing is left behind."""
        if conn_id in self.wires:
            raise DataplaneError(f"connection {conn_id} already has a vWire")
        fd_c, name_c = await netns.run_in(client_ns, tundev.create, client, client_exclusive)
        try:
            fd_e, name_e = await netns.run_in(endpoint_ns, tundev.create, endpoint, False)
        except BaseException:
            await asyncio.to_thread(tundev.remove, fd_c)
            raise
        wire = Wire(conn_id, Side(client_ns, name_c, list(client.addresses)),
                    Side(endpoint_ns, name_e, list(endpoint.addresses)), client.mtu,
                    fds=(fd_c, fd_e))
        try:
            wire.handle = self.engine.add_wire(fd_c, fd_e)
            self.db.put("wires", conn_id, wire.record())
        except BaseException:
            await self._remove_devices(wire)
            raise
        self.wires[conn_id] = wire
        log.info("vWire %s up: %s/%s <-> %s/%s", conn_id, client_ns or "-", name_c,
                 endpoint_ns or "-", name_e)
        return wire

    async def disconnect(self, conn_id: str) -> bool:
        """Stops the wire and removes both devices; False if there was none."""
        wire = self.wires.pop(conn_id, None)
        if wire is None:
            return False
        if wire.handle:
            self.engine.remove_wire(wire.handle)
        self.db.delete("wires", conn_id)
        await self._remove_devices(wire)
        log.info("vWire %s removed (%s, %s)", conn_id, wire.client.ifname, wire.endpoint.ifname)
        return True

    def stats(self, conn_id: str) -> dict | None:
        """Counters as seen from the client: tx = towards the endpoint, rx = back."""
        wire = self.wires.get(conn_id)
        if wire is None or not wire.handle:
            return None
        raw = self.engine.wire_stats(wire.handle)
        return {"client_to_endpoint": raw["a_to_b"], "endpoint_to_client": raw["b_to_a"],
                "dead": {"client": raw["dead"][0], "endpoint": raw["dead"][1]}}

    def totals(self) -> dict:
        return self.engine.totals()

    async def restore(self) -> list[str]:
        """Re-attaches the devices of wires recorded by an earlier run; returns their ids."""
        restored = []
        for conn_id, doc in list(self.db.items("wires")):
            wire = Wire(conn_id, Side(**doc["client"]), Side(**doc["endpoint"]), doc["mtu"])
            try:
                fd_c = await netns.run_in(wire.client.netns, tundev.attach, wire.client.ifname)
                try:
                    fd_e = await netns.run_in(wire.endpoint.netns, tundev.attach,
                                              wire.endpoint.ifname)
                except BaseException:
                    await asyncio.to_thread(tundev.remove, fd_c)
                    raise
            except DataplaneError as err:
                log.warning("vWire %s cannot be restored (%s): removing what is left", conn_id,
                            err)
                self.db.delete("wires", conn_id)
                await self._remove_by_name(wire)
                continue
            wire.fds = (fd_c, fd_e)
            wire.handle = self.engine.add_wire(fd_c, fd_e)
            self.wires[conn_id] = wire
            restored.append(conn_id)
        if restored:
            log.info("restored %d vWire(s) from the previous run", len(restored))
        return restored

    async def sweep(self, keep: set[str]) -> list[str]:
        """Removes wires no connection claims (left by connections that did not come back)."""
        orphans = [cid for cid in self.wires if cid not in keep]
        for conn_id in orphans:
            log.info("vWire %s belongs to no connection: removing it", conn_id)
            await self.disconnect(conn_id)
        return orphans

    async def shutdown(self) -> None:
        """Stops the engine and lets go of the devices, which persist for the next run."""
        self.engine.stop()
        for wire in self.wires.values():
            self.engine.remove_wire(wire.handle)
            for fd in wire.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.wires.clear()

    async def _remove_devices(self, wire: Wire) -> None:
        for fd in wire.fds:
            if fd >= 0:
                await asyncio.to_thread(tundev.remove, fd)

    async def _remove_by_name(self, wire: Wire) -> None:
        for side in (wire.client, wire.endpoint):
            if netns.exists(side.netns):
                with contextlib.suppress(DataplaneError):
                    await netns.run_in(side.netns, tundev.remove_by_name, side.ifname)
