"""Asking DNS servers over UDP from the event loop (dnslib for the wire format): one
socket, answers matched to their questions. Used by the vL3 resolvers (peers, upstream)
and by the lookup of other domains' registries (DNS SRV).

An answer counts only if it comes from the server asked, under the id it was asked with
(drawn by `secrets`), for the same question; at most MAX_IN_FLIGHT questions wait on one
socket, and one more fails at once rather than waiting for an id to come free.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets

from dnslib import DNSRecord
from dnslib.dns import DNSError

MAX_IN_FLIGHT = 1024   # questions awaiting answers on one socket (of 65,536 ids)


class DnsExchange(asyncio.DatagramProtocol):
    """A UDP socket that sends queries and matches answers to them."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        # id -> (its waiter, the server asked, the question)
        self.waiting: dict[int, tuple[asyncio.Future[DNSRecord], tuple[str, int],
                                      tuple[str, int]]] = {}
        self.refused = 0   # questions not sent: MAX_IN_FLIGHT were waiting

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        try:
            answer = DNSRecord.parse(data)
        except DNSError:
            return
        entry = self.waiting.get(answer.header.id)
        if entry is None or _server(addr[0], addr[1]) != entry[1] or _question(answer) != entry[2]:
            return   # not what we asked, or not from whom we asked it
        del self.waiting[answer.header.id]
        if not entry[0].done():
            entry[0].set_result(answer)

    async def ask(self, query: DNSRecord, server: tuple[str, int], timeout: float,
                  ) -> DNSRecord | None:
        """The server's answer to a copy of `query` under a fresh id; None on timeout or
        when too many questions wait already."""
        assert self.transport is not None
        if len(self.waiting) >= MAX_IN_FLIGHT:
            self.refused += 1
            return None
        query = DNSRecord.parse(query.pack())
        query.header.id = secrets.randbelow(1 << 16)
        while query.header.id in self.waiting:   # at most 1/64 of the ids are taken
            query.header.id = secrets.randbelow(1 << 16)
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[query.header.id] = (waiter, _server(*server), _question(query))
        self.transport.sendto(query.pack(), server)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            entry = self.waiting.get(query.header.id)
            if entry is not None and entry[0] is waiter:
                del self.waiting[query.header.id]


def _server(host: str, port: int) -> tuple[str, int]:
    return str(ipaddress.ip_address(host.split("%")[0])), port


def _question(record: DNSRecord) -> tuple[str, int]:
    return (str(record.q.qname).lower(), record.q.qtype) if record.questions else ("", -1)


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
