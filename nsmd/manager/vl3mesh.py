"""The vWires between a vL3 service's endpoints: every pair joined once.

Of two endpoints, the one whose name sorts first asks the other for a mesh vWire (a held
connection from its router namespace, pinned to that endpoint, labelled vl3Peer with its
own name), so each pair has exactly one and either side can tell it from the names
alone. Checked against the registry view when a vL3 endpoint's record changes, and every
CHECK_S besides: a vWire to each endpoint that registered a subnet, none to one that
left. The vWires are held connections, so they are refreshed, healed (restored; never
moved to another endpoint) and survive restarts like any other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from nsmd.clock import Clock, sleep
from nsmd.errors import NsmdError
from nsmd.hosting import Hosting
from nsmd.model import Connection
from nsmd.registry import RegistryView
from nsmd.registry.watch import Overflowed
from nsmd.vl3 import subnets

CHECK_S = 0.5
RESCAN_S = 10.0  # the held connections are scanned again this often (a user may close one)
MESH_IFNAME = "vl3p%d"
log = logging.getLogger("nsmd.vl3")

Connect = Callable[..., Awaitable[Connection]]
Close = Callable[[str], Awaitable[None]]


class Mesh:
    def __init__(self, hosting: Hosting, registry: RegistryView, clock: Clock,
                 held: Callable[[], Iterable[Connection]], connect: Connect, close: Close):
        self.hosting = hosting
        self.registry = registry
        self.clock = clock
        self.held = held          # the connections this daemon holds
        self.connect = connect
        self.close = close
        self._pending: set[tuple[str, str]] = set()
        # (our endpoint, peer) -> mesh connection id; kept up to date by our own joins and
        # leaves, and rebuilt from the held connections every RESCAN_S, so a check costs
        # O(endpoints), not O(clients)
        self._index: dict[tuple[str, str], str] = {}
        self._rescan_at = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        changed = asyncio.Event()
        follower = asyncio.ensure_future(self._follow(changed))
        try:
            while not stopping.is_set():
                changed.clear()
                try:
                    await self.check_once()
                except Exception:  # the next round tries again
                    log.exception("checking the vL3 mesh failed")
                waits = [asyncio.ensure_future(w) for w in (
                    changed.wait(), stopping.wait(), sleep(self.clock, CHECK_S))]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
        finally:
            follower.cancel()

    async def _follow(self, changed: asyncio.Event) -> None:
        """Sets `changed` whenever a vL3 endpoint's record comes, changes or goes."""
        while True:
            watch = self.registry.watch_endpoints()
            try:
                async for event in watch:
                    nse = event.item
                    if any(subnets.subnet_of(nse, s) for s in nse.network_service_names):
                        changed.set()
            except Overflowed:
                changed.set()
            finally:
                watch.close()

    def wanted(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(our endpoint, peer) -> (service, our router namespace) for every mesh vWire
        this daemon should hold."""
        now = self.clock.time()
        wanted = {}
        for name in self.hosting.vl3_names():
            spec = self.hosting.spec(name)
            if spec is None or spec.vl3 is None or not self.hosting.vl3_subnet(name):
                continue
            mine = self.registry.endpoints.get(name)
            if mine is None:
                continue  # not registered (yet, or its namespace is gone)
            service = mine.network_service_names[0]
            for peer in self.registry.endpoints_of(service):
                if peer.name > name and peer.expiration_time > now and \
                        subnets.subnet_of(peer, service):
                    wanted[(name, peer.name)] = (service, spec.netns)
        return wanted

    def existing(self) -> dict[tuple[str, str], str]:
        """(our endpoint, peer) -> connection id of the mesh vWires held now."""
        now = self.clock.time()
        if now >= self._rescan_at:
            self._rescan_at = now + RESCAN_S
            self._index = {
                (conn.labels[subnets.PEER_LABEL], conn.network_service_endpoint_name): conn.id
                for conn in self.held() if subnets.PEER_LABEL in conn.labels}
        return dict(self._index)

    async def check_once(self) -> None:
        wanted, existing = self.wanted(), self.existing()
        for pair, conn_id in existing.items():
            if pair not in wanted:
                log.info("vL3 mesh: %s leaves %s", pair[0], pair[1])
                self._index.pop(pair, None)
                await self._quietly(self.close(conn_id))
        missing = [pair for pair in wanted if pair not in existing and pair not in self._pending]
        await asyncio.gather(*(self._join(pair, *wanted[pair]) for pair in missing))

    async def leave(self, endpoint: str) -> int:
        """Closes the mesh vWires `endpoint` asked for (it is being deleted)."""
        doomed = [(pair, cid) for pair, cid in self.existing().items() if pair[0] == endpoint]
        for pair, conn_id in doomed:
            self._index.pop(pair, None)
            await self._quietly(self.close(conn_id))
        return len(doomed)

    async def _join(self, pair: tuple[str, str], service: str, router_ns: str) -> None:
        self._pending.add(pair)
        try:
            conn = await self.connect(service, {subnets.PEER_LABEL: pair[0]}, router_ns,
                                      MESH_IFNAME, f"vl3@{pair[0]}", endpoint=pair[1])
            self._index[pair] = conn.id
            log.info("vL3 mesh: %s joined %s (%s)", pair[0], pair[1], conn.id)
        except NsmdError as err:
            log.warning("vL3 mesh: %s cannot join %s yet: %s", pair[0], pair[1], err)
        finally:
            self._pending.discard(pair)

    @staticmethod
    async def _quietly(closing: Awaitable[None]) -> None:
        try:
            await closing
        except NsmdError as err:
            log.warning("vL3 mesh: closing failed: %s", err)
