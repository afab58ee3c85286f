"""The local registry: Register / Find (with watch) / Unregister, persisted, with NSE expiry.

Lookups are served from memory (RegistryView); every change is written through to the
state database first, so a restarted daemon finds what it had. Endpoint records expire at
`expiration_time` unless re-registered (NSM: sdk pkg/registry/common/expire). A
re-registration that changes nothing but the expiry is not written (100,000 endpoints
re-register every 40 s); instead a restarted registry gives every stored endpoint one full
expiry period to re-register. Writes are coroutines so a remote registry (another
daemon's, over mTLS) can stand in for this one.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging

from nsmd import defaults
from nsmd.clock import Clock, Timer
from nsmd.errors import NotFound, ValidationError
from nsmd.model import NetworkService, NetworkServiceEndpoint, from_wire, to_wire
from nsmd.registry.view import KEPT_ALIVE, RegistryView, check_owner
from nsmd.state import StateDB
from nsmd.vl3 import subnets

EXPIRE_BATCH = 500  # expiries handled per event-loop turn (the API answers in between)
log = logging.getLogger("nsmd.registry")


class Registry(RegistryView):
    def __init__(self, db: StateDB, clock: Clock, nse_expiry_s: float = defaults.NSE_EXPIRY_S,
                 self_id: str = ""):
        super().__init__()
        self.db = db
        self.self_id = self_id  # this daemon's SPIFFE ID: the owner of its own writes
        self.clock = clock
        self.nse_expiry_s = nse_expiry_s
        self._expiry_heap: list[tuple[float, str]] = []
        self._expiry_timer: Timer | None = None
        self._load()

    async def start(self) -> None:
        """Nothing to wait for: the records are local."""

    # -- services --------------------------------------------------------------------------

    async def register_service(self, ns: NetworkService, owner: str | None = None,
                               ) -> NetworkService:
        ns.validate()
        old = self.services.get(ns.name)
        ns.path_ids = check_owner(old.path_ids if old else None, owner,
                                  f"network service {ns.name!r}", self.self_id)
        self.db.put("services", ns.name, to_wire(ns))
        self._put_service(ns)
        return ns

    async def unregister_service(self, name: str, owner: str | None = None) -> NetworkService:
        ns = self.services.get(name)
        if ns is None:
            raise NotFound(f"network service {name!r} is not registered")
        check_owner(ns.path_ids, owner, f"network service {name!r}", self.self_id)
        self.db.delete("services", name)
        self._drop_service(ns)
        return ns

    # -- endpoints -------------------------------------------------------------------------

    async def register_endpoint(self, nse: NetworkServiceEndpoint, owner: str | None = None,
                                keep: bool = False) -> NetworkServiceEndpoint:
        """Upserts `nse`; its expiration_time becomes min(requested, now + expiry period),
        or KEPT_ALIVE for this daemon's own hosted endpoints (`keep`): they live while the
        daemon does, with no refresh (a restarted registry gives them one period to be
        registered again)."""
        nse.validate()
        old = self.endpoints.get(nse.name)
        nse.path_ids = check_owner(old.path_ids if old else None, owner,
                                   f"network service endpoint {nse.name!r}", self.self_id)
        subnets.check_claims(nse, self.endpoints_of)
        now = self.clock.time()
        expires = now + self.nse_expiry_s
        if nse.expiration_time:
            if nse.expiration_time <= now:
                raise ValidationError("expiration_time", "a time in the future",
                                      nse.expiration_time)
            expires = min(expires, nse.expiration_time)
        if keep and owner is None:
            expires = KEPT_ALIVE
        nse.expiration_time = expires
        nse.initial_registration_time = (
            old.initial_registration_time if old else nse.initial_registration_time or now)
        if old is None or dataclasses.replace(old, expiration_time=expires) != nse:
            self.db.put("endpoints", nse.name, to_wire(nse))
        elif old.expiration_time == expires:
            return nse  # kept alive already: nothing changes
        self._put_endpoint(nse)
        if expires < KEPT_ALIVE:
            self._schedule_expiry(nse)
        return nse

    async def unregister_endpoint(self, name: str, owner: str | None = None,
                                  ) -> NetworkServiceEndpoint:
        nse = self.endpoints.get(name)
        if nse is None:
            raise NotFound(f"network service endpoint {name!r} is not registered")
        check_owner(nse.path_ids, owner, f"network service endpoint {name!r}", self.self_id)
        self._remove_endpoint(nse)
        return nse

    # -- expiry ----------------------------------------------------------------------------

    def expire_due(self) -> list[str]:
        """Unregisters every endpoint whose expiration_time has passed; returns their names."""
        now = self.clock.time()
        expired: list[str] = []
        while self._expiry_heap and self._expiry_heap[0][0] <= now and \
                len(expired) < EXPIRE_BATCH:
            when, name = heapq.heappop(self._expiry_heap)
            nse = self.endpoints.get(name)
            # Stale heap entries (re-registered since) carry an older time: skip them.
            if nse is not None and nse.expiration_time == when:
                log.info("endpoint %s expired (not re-registered in time)", name)
                self._remove_endpoint(nse)
                expired.append(name)
        self._arm_expiry()
        return expired

    def close(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None

    # -- internals -------------------------------------------------------------------------

    def _remove_endpoint(self, nse: NetworkServiceEndpoint) -> None:
        self.db.delete("endpoints", nse.name)
        self._drop_endpoint(nse)

    def _schedule_expiry(self, nse: NetworkServiceEndpoint) -> None:
        heapq.heappush(self._expiry_heap, (nse.expiration_time, nse.name))
        if self._expiry_heap[0][1] == nse.name:
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        while self._expiry_heap:
            when, name = self._expiry_heap[0]
            nse = self.endpoints.get(name)
            if nse is not None and nse.expiration_time == when:
                self._expiry_timer = self.clock.call_at(when, self.expire_due)
                return
            heapq.heappop(self._expiry_heap)

    def _load(self) -> None:
        for _, doc in self.db.items("services"):
            ns = from_wire(NetworkService, doc)
            self.services[ns.name] = ns
        grace = self.clock.time() + self.nse_expiry_s  # stored expiries are not kept fresh
        for _, doc in self.db.items("endpoints"):
            nse = from_wire(NetworkServiceEndpoint, doc)
            # kept-alive records get one period too, like any other, to be kept again
            nse.expiration_time = grace if nse.expiration_time >= KEPT_ALIVE else \
                max(nse.expiration_time, grace)
            self._put_endpoint(nse)
            self._schedule_expiry(nse)
        log.info("registry loaded: %d services, %d endpoints", len(self.services),
                 len(self.endpoints))
