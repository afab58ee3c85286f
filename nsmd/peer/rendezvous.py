"""Rendezvous: peer calls between daemons that cannot reach each other's listener (behind
NAT without --advertise, or a firewall), carried by the registry daemon both keep a TLS
connection to.

    caller --POST /v1/peer/rendezvous/call--> registry daemon (Hub)
                                                 | the callee's channel: an NDJSON stream
                                                 v it opened itself (no inbound port)
                                              callee --POST .../reply--> back to the caller

Calls and replies are sealed (envelope.py): the registry daemon carries them and adds only
what it saw, each side's address on its TLS connection (the public address of its NAT),
which is where the tunnel is aimed and where hole punching starts. It can drop or delay a
call, never read its purpose into another, forge or replay one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nsmd.clock import Clock, backoff
from nsmd.errors import NotFound, NsmdError
from nsmd.identity.tokens import Signer
from nsmd.peer.envelope import Opened, Opener, seal
from nsmd.quotas import QuotaExceeded

log = logging.getLogger("nsmd.peer.rendezvous")
CALL_TIMEOUT_S = 10.0
MAX_PENDING = 64        # calls waiting on one channel
PING_S = 15.0           # a line on an idle channel: both ends see a dead link
CALL_PATH = "/v1/peer/rendezvous/call"
REPLY_PATH = "/v1/peer/rendezvous/reply"
CHANNEL_PATH = "/v1/peer/rendezvous"

# what a callee does with an opened call: (HTTP status, payload)
Serve = Callable[[Opened, str], Awaitable[tuple[int, Any]]]


class RendezvousError(NsmdError):
    status = 502


class Channel:
    def __init__(self, spiffe_id: str, address: str):
        self.spiffe_id = spiffe_id
        self.address = address
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future] = {}
        self.closed = asyncio.Event()

    def close(self) -> None:
        self.closed.set()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RendezvousError(f"{self.spiffe_id} left the rendezvous"))


class Hub:
    """At the registry daemon: the channel each daemon holds open (its latest only)."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}
        self._numbers = itertools.count(1)

    def __contains__(self, spiffe_id: str) -> bool:
        return spiffe_id in self._channels

    def attach(self, spiffe_id: str, address: str) -> Channel:
        old = self._channels.pop(spiffe_id, None)
        if old is not None:
            old.close()
        channel = self._channels[spiffe_id] = Channel(spiffe_id, address)
        log.info("rendezvous: %s holds a channel from %s", spiffe_id, address)
        return channel

    def detach(self, channel: Channel) -> None:
        channel.close()
        if self._channels.get(channel.spiffe_id) is channel:
            del self._channels[channel.spiffe_id]
            log.info("rendezvous: %s's channel closed", channel.spiffe_id)

    async def events(self, channel: Channel) -> AsyncIterator[dict]:
        """What the channel's holder receives: calls, and a ping when idle."""
        while not channel.closed.is_set():
            try:
                yield await asyncio.wait_for(channel.queue.get(), PING_S)
            except TimeoutError:
                yield {"ping": True}

    async def call(self, to: str, envelope: str, from_addr: str,
                   timeout_s: float = CALL_TIMEOUT_S) -> tuple[str, str]:
        """Delivers a sealed call to `to`'s channel; (its sealed reply, `to`'s address)."""
        channel = self._channels.get(to)
        if channel is None:
            raise NotFound(f"{to} holds no rendezvous channel here")
        if len(channel.pending) >= MAX_PENDING:
            raise QuotaExceeded("rendezvous-pending", f"{MAX_PENDING} calls already wait "
                                f"for {to}")
        number = next(self._numbers)
        future = channel.pending[number] = asyncio.get_running_loop().create_future()
        channel.queue.put_nowait({"n": number, "envelope": envelope, "from_addr": from_addr})
        try:
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise RendezvousError(f"{to} did not answer through the rendezvous in "
                                  f"{timeout_s:g} s") from None
        finally:
            channel.pending.pop(number, None)
        return reply, channel.address

    def reply(self, spiffe_id: str, number: Any, envelope: Any) -> None:
        """A channel holder's (sealed) reply to call `number`; others are ignored."""
        channel = self._channels.get(spiffe_id)
        future = channel.pending.get(number) if channel and isinstance(number, int) else None
        if future is not None and not future.done() and isinstance(envelope, str):
            future.set_result(envelope)


class Rendezvous:
    """A daemon's side: calls to daemons it cannot reach, sealed and sent through the
    registry daemon (or this daemon's own hub, if it is the registry); and, on a daemon
    using another's registry, the channel where calls for it arrive."""

    def __init__(self, client: Any, signer: Signer, opener: Opener, serve: Serve,
                 clock: Clock, registry_url: str = "", registry_id: str = "",
                 hub: Hub | None = None, own_address: str = ""):
        self.client = client          # PeerClient (direct calls to the registry daemon)
        self.signer = signer
        self.opener = opener
        self.serve = serve
        self.clock = clock
        self.registry_url = registry_url
        self.registry_id = registry_id
        self.hub = hub
        self.own_address = own_address   # what callees see us as, when we are the hub
        self.observed: dict[str, str] = {}   # callee -> its address as the hub sees it
        self._answering: set[asyncio.Task] = set()

    async def call(self, to: str, op: str, body: Any, timeout_s: float = CALL_TIMEOUT_S,
                   ) -> Any:
        """`op` (a /v1/peer/... path) on daemon `to`, through the rendezvous."""
        from nsmd.peer.client import _error

        sealed, jti = seal(self.signer, to, {"op": op, "url": self.client.own_url}, body)
        reply: Any
        if self.hub is not None:
            reply, address = await self.hub.call(to, sealed, self.own_address, timeout_s)
        else:
            answer = await self.client.call(
                "POST", self.registry_url + CALL_PATH, {"to": to, "envelope": sealed},
                expect=self.registry_id, timeout_s=timeout_s + 1, direct=True)
            if not isinstance(answer, dict):
                raise RendezvousError("the rendezvous answered without a reply")
            reply, address = answer.get("envelope"), str(answer.get("to_addr", ""))
        opened = self.opener.open(reply, expect_sender=to, reply_to=jti)
        self.observed[to] = address
        status, payload = opened.claims.get("status"), opened.body()
        if not isinstance(status, int) or status >= 400:
            raise _error(f"{to} (through the rendezvous)", status if isinstance(status, int)
                         else 502, payload)
        return payload

    async def run(self, stopping: asyncio.Event) -> None:
        """Holds this daemon's channel at the registry daemon while the daemon runs,
        opening it again after a break."""
        if not self.registry_url:
            return
        pause = backoff(self.clock, 0.2, 5.0)
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                opened_at = time.monotonic()
                held = asyncio.ensure_future(self._hold())
                await asyncio.wait({held, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not held.done():
                    held.cancel()
                    break
                if time.monotonic() - opened_at > 30:
                    pause = backoff(self.clock, 0.2, 5.0)  # it held: start over quickly
                await pause.wait()
        finally:
            stop.cancel()

    async def _hold(self) -> None:
        try:
            async for item in self.client.stream(self.registry_url + CHANNEL_PATH,
                                                  expect=self.registry_id):
                if "envelope" in item:
                    task = asyncio.ensure_future(self._answer(item))
                    self._answering.add(task)
                    task.add_done_callback(self._answering.discard)
        except NsmdError as err:
            log.debug("rendezvous channel to %s: %s", self.registry_url, err)

    async def _answer(self, item: dict) -> None:
        try:
            opened = self.opener.open(item["envelope"])
        except NsmdError as err:
            log.warning("rendezvous: a call refused: %s", err)
            return  # unsealed: no reply (the carrier learns nothing)
        status, payload = await self.serve(opened, str(item.get("from_addr", "")))
        sealed, _ = seal(self.signer, opened.sender, {"status": status}, payload,
                         jti=opened.jti)
        try:
            await self.client.call("POST", self.registry_url + REPLY_PATH,
                                   {"n": item.get("n"), "envelope": sealed},
                                   expect=self.registry_id, direct=True)
        except NsmdError as err:
            log.warning("rendezvous: the reply to %s was lost: %s", opened.sender, err)
