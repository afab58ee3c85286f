"""Asking DNS servers over UDP from the event loop (dnslib for the wire format): one
socket, answers matched to their questions by id. Used by the vL3 resolvers (peers,
upstream) and by the lookup of other domains' registries (DNS SRV)."""

from __future__ import annotations

import asyncio
import random

from dnslib import DNSRecord
from dnslib.dns import DNSError


class DnsExchange(asyncio.DatagramProtocol):
    """A UDP socket that sends queries and matches answers to them by id."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[DNSRecord]] = {}

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        try:
            answer = DNSRecord.parse(data)
        except DNSError:
            return
        waiter = self.waiting.pop(answer.header.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    async def ask(self, query: DNSRecord, server: tuple[str, int], timeout: float,
                  ) -> DNSRecord | None:
        """The server's answer to a copy of `query` under a fresh id; None on timeout."""
        assert self.transport is not None
        query = DNSRecord.parse(query.pack())
        query.header.id = random.randrange(1 << 16)
        while query.header.id in self.waiting:
            query.header.id = random.randrange(1 << 16)
        waiter = self.waiting[query.header.id] = asyncio.get_running_loop().create_future()
        self.transport.sendto(query.pack(), server)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self.waiting.pop(query.header.id, None)


async def ask_first(query: DNSRecord, servers: list[tuple[str, int]], timeout: float,
                    ) -> DNSRecord | None:
    """The first answer of `servers`, asked in turn from a socket of this namespace."""
    loop = asyncio.get_running_loop()
    for server in servers:
        family_any = "::" if ":" in server[0] else "0.0.0.0"
        transport, exchange = await loop.create_datagram_endpoint(
            DnsExchange, local_addr=(family_any, 0))
        try:
            answer = await exchange.ask(query, server, timeout)
        finally:
            transport.close()
        if answer is not None:
            return answer
    return None
