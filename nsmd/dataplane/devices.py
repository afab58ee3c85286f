"""The wires' TUN/TAP devices, and their records in the state database.

Devices are persistent and each wire with devices is recorded, so a restarted daemon
re-attaches to them and removes those nobody claims. Tunnel keys are never stored: a
re-attached tunnel is keyed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from nsmd import netns, tundev
from nsmd.dataplane.wires import Side, Wire, WireKind
from nsmd.errors import DataplaneError
from nsmd.state import StateDB

log = logging.getLogger("nsmd.dataplane")


class Devices:
    def __init__(self, db: StateDB):
        self.db = db

    async def create(self, ns: str, cfg: tundev.InterfaceConfig,
                     exclusive: bool) -> tuple[list[int], str]:
        """One device in namespace `ns`: (its queue fds, its name)."""
        return await netns.run_in(ns, tundev.create, cfg, exclusive)

    async def create_pair(self, client_ns: str, client: tundev.InterfaceConfig,
                          client_exclusive: bool, endpoint_ns: str,
                          endpoint: tundev.InterfaceConfig,
                          ) -> list[tuple[list[int], str]]:
        """Both devices of a local wire at once (each is a few netlink round trips on its
        own thread); if either fails, neither is left behind."""
        made = await asyncio.gather(
            self.create(client_ns, client, client_exclusive),
            self.create(endpoint_ns, endpoint, False), return_exceptions=True)
        created = [r for r in made if not isinstance(r, BaseException)]
        failed = [r for r in made if isinstance(r, BaseException)]
        if failed:
            for fds, _ in created:
                await asyncio.to_thread(tundev.remove, fds)
            raise failed[0]
        return created

    async def configure(self, side: Side, cfg: tundev.InterfaceConfig) -> None:
        await netns.run_in(side.netns, tundev.configure, side.ifname, cfg)
        side.addresses = list(cfg.addresses)

    async def remove(self, wire: Wire) -> None:
        for fds in wire.devices:
            await asyncio.to_thread(tundev.remove, fds)
        wire.devices = []

    def release(self, wire: Wire) -> None:
        """Lets go of the devices without removing them (they persist for the next run)."""
        for fds in wire.devices:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def record(self, wire: Wire) -> None:
        if wire.kind != WireKind.RELAY:  # relays hold no device to re-attach after a restart
            self.db.put("wires", wire.conn_id, wire.record())

    def forget(self, conn_id: str) -> None:
        self.db.delete("wires", conn_id)

    async def reattach(self, max_queues: int) -> list[Wire]:
        """The recorded wires with their devices attached again; a wire that cannot be
        (its namespace or device gone) is removed with whatever is left of it."""
        wires = []
        for conn_id, doc in list(self.db.items("wires")):
            wire = Wire.from_record(conn_id, doc)
            queues = doc.get("queues", 1)
            try:
                for side in (s for s in (wire.client, wire.endpoint) if s is not None):
                    wire.devices.append(await netns.run_in(
                        side.netns, tundev.attach, side.ifname, wire.offload, queues, wire.l2))
                if queues > max_queues:
                    raise DataplaneError(f"it has {queues} queues, this run only "
                                         f"{max_queues} engines")
            except DataplaneError as err:
                log.warning("vWire %s cannot be restored (%s): removing what is left", conn_id,
                            err)
                await self.remove(wire)
                self.forget(conn_id)
                await self._remove_by_name(wire)
                continue
            wires.append(wire)
        return wires

    async def _remove_by_name(self, wire: Wire) -> None:
        for side in (wire.client, wire.endpoint):
            if side is not None and netns.exists(side.netns):
                with contextlib.suppress(DataplaneError):
                    await netns.run_in(side.netns, tundev.remove_by_name, side.ifname)
