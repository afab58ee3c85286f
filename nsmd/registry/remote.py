"""Another daemon's registry, used through mTLS and mirrored in memory.

Reads (discovery, Find, local watches) are served from the mirror, so selecting an
endpoint costs no round trip. The mirror follows the remote registry's watch streams: a
stream is opened first, then a snapshot is fetched, then the stream's events apply on
top, so nothing between the two is lost. A broken stream is reopened with backoff and
`on_resync` listeners run (hosting re-registers at once: NSM's registry heal). Writes go
to the remote registry and, once it accepted them, into the mirror. Every call expects
the registry's SPIFFE ID when one is configured (--registry-id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nsmd.clock import Clock, SystemClock, backoff
from nsmd.model import NetworkService, NetworkServiceEndpoint, from_wire, to_wire
from nsmd.peer.client import PeerClient
from nsmd.registry.view import RegistryView

FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0
START_TIMEOUT_S = 10.0
log = logging.getLogger("nsmd.registry.remote")


class RemoteRegistry(RegistryView):
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, peer: PeerClient, base_url: str, expect: str = "",
                 clock: Clock | None = None):
        super().__init__()
        self.peer = peer
        self.clock = clock or SystemClock()
        self.base = base_url.rstrip("/")
        self.expect = expect  # the registry daemon's SPIFFE ID ("" = any of our domain)
        self.on_resync: list[Callable[[], object]] = []
        self._tasks: list[asyncio.Task] = []
        self._synced = {"services": asyncio.Event(), "endpoints": asyncio.Event()}
        self.last_error = ""  # why the last watch failed (for callers that must say so)

    async def start(self) -> None:
        """Starts mirroring; returns once both snapshots are in (or fails after a while)."""
        self._tasks = [asyncio.ensure_future(self._follow("services")),
                       asyncio.ensure_future(self._follow("endpoints"))]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._synced.values())),
                                   self.start_timeout_s)
        except TimeoutError:
            log.error("registry %s not reachable yet; discovery sees no endpoints until it is",
                      self.base)

    @property
    def synced(self) -> bool:
        return all(e.is_set() for e in self._synced.values())

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    # -- writes ----------------------------------------------------------------------------

    async def register_service(self, ns: NetworkService, owner: str | None = None,
                               ) -> NetworkService:
        ns.validate()
        done = from_wire(NetworkService, await self.peer.call(
            "POST", f"{self.base}/v1/services", to_wire(ns), expect=self.expect))
        self._put_service(done)
        return done

    async def unregister_service(self, name: str, owner: str | None = None) -> NetworkService:
        gone = from_wire(NetworkService, await self.peer.call(
            "DELETE", f"{self.base}/v1/services/{name}", expect=self.expect))
        self._drop_service(gone)
        return gone

    async def register_endpoint(self, nse: NetworkServiceEndpoint, owner: str | None = None,
                                keep: bool = False) -> NetworkServiceEndpoint:
        nse.validate()
        done = from_wire(NetworkServiceEndpoint, await self.peer.call(
            "POST", f"{self.base}/v1/endpoints", to_wire(nse), expect=self.expect))
        self._put_endpoint(done)
        return done

    async def unregister_endpoint(self, name: str, owner: str | None = None,
                                  ) -> NetworkServiceEndpoint:
        gone = from_wire(NetworkServiceEndpoint, await self.peer.call(
            "DELETE", f"{self.base}/v1/endpoints/{name}", expect=self.expect))
        self._drop_endpoint(gone)
        return gone

    # -- mirroring -------------------------------------------------------------------------

    async def _follow(self, kind: str) -> None:
        model = NetworkService if kind == "services" else NetworkServiceEndpoint
        pause = backoff(self.clock, FIRST_RETRY_S, MAX_RETRY_S)
        while True:
            try:
                snapshot: list | None = []
                async for event in self.peer.stream(f"{self.base}/v1/{kind}?watch=true",
                                                   expect=self.expect):
                    if snapshot is not None:
                        if not event.get("synced"):
                            snapshot.append(from_wire(model, event["item"]))
                            continue
                        self._replace(kind, snapshot)
                        snapshot = None
                        if self._synced[kind].is_set():
                            for listener in self.on_resync:
                                listener()
                        self._synced[kind].set()
                        pause.reset()
                        continue
                    self._apply(kind, from_wire(model, event["item"]), event["deleted"])
                log.warning("registry %s ended the %s watch; reopening", self.base, kind)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure: log, back off, resync
                self.last_error = str(err)
                log.warning("registry %s: %s watch failed (%s); retrying in %.1f s",
                            self.base, kind, err, pause.next_s)
            await pause.wait()

    def _replace(self, kind: str, items: list) -> None:
        current = self.services if kind == "services" else self.endpoints
        fresh = {item.name for item in items}
        for name in [n for n in current if n not in fresh]:
            self._apply(kind, current[name], deleted=True)
        for item in items:
            self._apply(kind, item, deleted=False)

    def _apply(self, kind: str, item, deleted: bool) -> None:
        if kind == "services":
            (self._drop_service if deleted else self._put_service)(item)
        else:
            (self._drop_endpoint if deleted else self._put_endpoint)(item)
