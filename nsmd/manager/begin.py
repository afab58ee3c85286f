"""begin: one request or close at a time per connection, and the memory of each connection.

Remembers the last connection the chain returned (Close always tears down exactly what was
set up) and the rest of the chain it went through, so that timers (refresh, timeout) and
healing can replay Request or Close from here (NSM: sdk common/begin). An established
connection requested with state RESELECT_REQUESTED is closed downstream first. Each
connection remembers its owner, the peer that created it, for authorize's checks.

Connections are kept packed and deflated (model/compact.py's Packer): a daemon holds them
for as long as its vWires live, and every reader gets a fresh object anyway.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator

from nsmd.caller import CALLER
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, Mechanism, NetworkServiceRequest, State
from nsmd.model.compact import Packer
from nsmd.vl3.subnets import PEER_LABEL


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """The peer daemon that created a connection (both empty: this daemon)."""
    spiffe_id: str = ""
    url: str = ""               # where it listens, if it said (drop notices go there)


THIS_DAEMON = Owner()


class _Entry:
    """One connection: its last request packed (the connection as the chain last returned
    it, and the mechanism preferences replays send), the rest of the chain, the owner.
    Next and Owner objects are shared between entries (Begin interns them)."""
    __slots__ = ("packed", "nxt", "owner")

    def __init__(self, packed: bytes, nxt: Next, owner: Owner):
        self.packed = packed
        self.nxt = nxt
        self.owner = owner


class Begin(Element):
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._packer = Packer(NetworkServiceRequest)
        # Shared between entries: one Next per place in a chain (it keeps the chain alive,
        # so the place's id stays its own), one Owner per peer.
        self._nexts: dict[tuple[int, int], Next] = {}
        self._owners: dict[Owner, Owner] = {}
        # Called with each connection closed from here rather than by its caller (timeout,
        # endpoint removal) and its owner, so the caller's side can heal.
        self.on_dropped: list[Callable[[Connection, Owner], object]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, int] = {}
        self._per_owner: collections.Counter[str] = collections.Counter()  # SPIFFE ID -> held

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conn_id: str) -> bool:
        return conn_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)

    def connections(self) -> list[Connection]:
        return [self._connection(e) for e in self._entries.values()]

    def each(self) -> Iterator[Connection]:
        """The connections one at a time, for scans: unpacking them all into a list every
        time a timer scans would make the daemon's memory peak at twice what it keeps."""
        for entry in list(self._entries.values()):
            yield self._connection(entry)

    def get(self, conn_id: str) -> Connection | None:
        entry = self._entries.get(conn_id)
        return self._connection(entry) if entry else None

    def held_by(self, spiffe_id: str) -> int:
        """How many connections the peer `spiffe_id` created here (its quota)."""
        return self._per_owner[spiffe_id]

    def owner(self, conn_id: str) -> str | None:
        """The SPIFFE ID of the peer that created the connection ("" for this daemon's own
        client side); None if there is no such connection."""
        entry = self._entries.get(conn_id)
        return entry.owner.spiffe_id if entry else None

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        async with self._serialised(request.connection.id):
            return await self._request_locked(request, nxt)

    async def close(self, conn: Connection, nxt: Next) -> None:
        async with self._serialised(conn.id):
            await self._close_locked(conn.id)

    def adopt(self, request: NetworkServiceRequest, nxt: Next) -> None:
        """Remembers, DOWN, a connection whose request failed but that must not be lost
        (one held before a restart): heal can bring it back and Close can end it."""
        conn = request.connection.clone()
        conn.state = State.DOWN
        if conn.id not in self._entries:
            self._keep(conn, request.mechanism_preferences, nxt, THIS_DAEMON)

    # -- replays from this point of the chain (refresh, timeout, heal) ---------------------

    async def request_again(self, conn_id: str, *, reselect: bool = False) -> Connection | None:
        """Requests the connection again as last returned; None if it is gone meanwhile.

        reselect: close it downstream and let the chain pick an endpoint afresh; the IP
        context stays in the request, so the new endpoint may hand out the same addresses.
        """
        async with self._serialised(conn_id):
            entry = self._entries.get(conn_id)
            if entry is None:
                return None
            request = self._packer.unpack(entry.packed)
            if reselect:
                conn = request.connection
                conn.state = State.RESELECT_REQUESTED
                if PEER_LABEL not in conn.labels:  # a vL3 mesh vWire stays with its peer
                    conn.network_service_endpoint_name = ""
                conn.mechanism = None
            return await self._request_locked(request, entry.nxt)

    async def close_by_id(self, conn_id: str) -> bool:
        """Closes a connection on our own initiative and tells on_dropped listeners."""
        async with self._serialised(conn_id):
            entry = self._entries.get(conn_id)
            closed = await self._close_locked(conn_id)
        if entry is not None:
            for listener in self.on_dropped:
                listener(self._connection(entry), entry.owner)
        return closed

    # -- internals -------------------------------------------------------------------------

    async def _request_locked(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn_id = request.connection.id
        old = self._entries.get(conn_id)
        reselect = old if request.connection.state == State.RESELECT_REQUESTED else None
        if reselect is not None:
            replaced = self._connection(reselect)
            replaced.state = State.RESELECT_REQUESTED  # closed to be replaced, not for good
            with contextlib.suppress(Exception):  # the old endpoint may be dead already
                await reselect.nxt.close(replaced)
        try:
            conn = await nxt.request(request)
        except BaseException:
            if reselect is not None:  # keep the entry (DOWN): the caller may retry or close
                down = self._packer.unpack(reselect.packed)
                down.connection.state = State.DOWN
                reselect.packed = self._packer.pack(down)
            raise
        conn.state = State.UP
        # The creator stays the owner: authorize let only it refresh (CALLER, set by the
        # entry point, is the peer that created it, or unset for this daemon's own side).
        caller = CALLER.get()
        owner = old.owner if old else Owner(getattr(caller, "spiffe_id", ""),
                                            getattr(caller, "url", ""))
        # excluded prefixes are worked out afresh for each request (excluded.py); kept,
        # they grow with the square of a namespace's vWires
        excluded = conn.context.ip_context.excluded_prefixes
        conn.context.ip_context.excluded_prefixes = []
        self._keep(conn, request.mechanism_preferences, nxt, owner)
        conn.context.ip_context.excluded_prefixes = excluded
        return conn

    async def _close_locked(self, conn_id: str) -> bool:
        entry = self._entries.pop(conn_id, None)
        if entry is None:
            return False  # NSM: closing an unknown connection is a no-op
        self._per_owner[entry.owner.spiffe_id] -= 1
        if not self._per_owner[entry.owner.spiffe_id]:
            del self._per_owner[entry.owner.spiffe_id]
        await entry.nxt.close(self._connection(entry))
        return True

    def _connection(self, entry: _Entry) -> Connection:
        return self._packer.unpack(entry.packed).connection

    def _keep(self, conn: Connection, preferences: list[Mechanism], nxt: Next,
              owner: Owner) -> None:
        packed = self._packer.pack(NetworkServiceRequest(connection=conn,
                                                         mechanism_preferences=preferences))
        if conn.id not in self._entries:
            self._per_owner[owner.spiffe_id] += 1
        self._entries[conn.id] = _Entry(packed, self._nexts.setdefault(nxt.place(), nxt),
                                        self._owners.setdefault(owner, owner))

    @contextlib.asynccontextmanager
    async def _serialised(self, conn_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(conn_id, asyncio.Lock())
        self._waiters[conn_id] = self._waiters.get(conn_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiters[conn_id] -= 1
            if not self._waiters[conn_id]:
                del self._waiters[conn_id]
                del self._locks[conn_id]
