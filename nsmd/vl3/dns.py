"""The resolver a vL3 endpoint serves to its clients (NSM's vl3dns).

It listens on the endpoint's router address, port 53, inside its router namespace, and
answers A/AAAA queries for `NAME.SERVICE.` from the names of its own clients; a name it
does not know in the zone is asked of the other endpoints' resolvers over the mesh
(queries from peers carry RD=0 and are answered from local names only, so nothing
loops). A peer's answer counts only for the name asked and only with addresses of that
peer's own subnet, so no mesh member can speak for another's clients. Names outside the
zone go to the host's resolvers, from the daemon's namespace, only where the operator
enabled it (`vl3-dns-forward`); otherwise they are refused. At most MAX_PENDING queries
are resolved at once; more are dropped and counted. dnslib does the wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.dns import DNSError

from nsmd import netns
from nsmd.dnsclient import DnsExchange

PORT = 53
TTL_S = 5
PEER_TIMEOUT_S = 0.5
UPSTREAM_TIMEOUT_S = 2.0
MAX_PENDING = 256   # queries being resolved at once (each may wait on peers or upstream)
IP_FREEBIND = 15  # bind to the router address before any device carries it
log = logging.getLogger("nsmd.vl3.dns")

Names = Callable[[str], set[str]]  # DNS label -> addresses of the clients that have it
Peers = Callable[[], list[tuple[str, str]]]  # the other endpoints: (router address, subnet)


def upstream_servers(configured: list[tuple[str, int]],
                     resolv_conf: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The servers configured, or else the nameservers of the host's resolv.conf."""
    if configured:
        return configured
    servers = []
    with contextlib.suppress(OSError), open(resolv_conf) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                servers.append((fields[1].split("%")[0], PORT))
    return servers


class Resolver(asyncio.DatagramProtocol):
    """One vL3 endpoint's resolver for zone `service`."""

    def __init__(self, service: str, names: Names, peers: Peers,
                 upstream: list[tuple[str, int]], port: int = PORT):
        self.port = port              # ours and the peers'
        self.zone = service.lower().rstrip(".") + "."
        self.names = names
        self.peers = peers
        self.upstream = upstream      # [] = names outside the zone are refused
        self.transport: asyncio.DatagramTransport | None = None
        self._mesh: DnsExchange | None = None   # asks peers, from the router namespace
        self._out: DnsExchange | None = None    # asks upstream, from the daemon's namespace
        self.pending = 0
        self.answered = self.forwarded = self.malformed = self.dropped = 0

    async def start(self, router_ns: str, address: str) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = await netns.run_in(router_ns, _bound, family, address, self.port)
        asker = await netns.run_in(router_ns, _bound, family, address, 0)
        await loop.create_datagram_endpoint(lambda: self, sock=listener)
        _, self._mesh = await loop.create_datagram_endpoint(DnsExchange, sock=asker)
        if self.upstream:
            _, self._out = await loop.create_datagram_endpoint(DnsExchange, local_addr=(
                "::" if any(":" in h for h, _ in self.upstream) else "0.0.0.0", 0))

    def close(self) -> None:
        for part in (self, self._mesh, self._out):
            if part is not None and part.transport is not None:
                part.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        try:
            query = DNSRecord.parse(data)
        except DNSError:
            self.malformed += 1  # dropped and counted, like a malformed packet
            return
        if self.pending >= MAX_PENDING or not query.questions:
            self.dropped += 1
            return
        self.pending += 1
        asyncio.ensure_future(self._answer(query, addr))

    async def _answer(self, query: DNSRecord, addr) -> None:
        try:
            reply = await self.resolve(query)
        finally:
            self.pending -= 1
        if self.transport is not None and reply is not None:
            self.transport.sendto(reply.pack(), addr)

    async def resolve(self, query: DNSRecord) -> DNSRecord | None:
        qname = str(query.q.qname).lower()
        if not (qname == self.zone or qname.endswith("." + self.zone)):
            return await self._forward(query)
        reply = query.reply()
        label = qname[: -len(self.zone)].rstrip(".")
        addresses = self.names(label) if label and "." not in label else set()
        if not addresses and query.header.rd:
            addresses = await self._ask_peers(query)
        wanted = QTYPE[query.q.qtype]
        for address in sorted(addresses):
            version = ipaddress.ip_address(address).version
            if wanted in ("A", "ANY") and version == 4:
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=TTL_S))
            elif wanted in ("AAAA", "ANY") and version == 6:
                reply.add_answer(RR(query.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=TTL_S))
        if not addresses:
            reply.header.rcode = RCODE.NXDOMAIN
        self.answered += 1
        return reply

    async def _ask_peers(self, query: DNSRecord) -> set[str]:
        if self._mesh is None:
            return set()
        local = DNSRecord.parse(query.pack())
        local.header.rd = 0  # answer from your own clients only
        peers = self.peers()
        answers = await asyncio.gather(*(self._mesh.ask(local, (router, self.port),
                                                        PEER_TIMEOUT_S)
                                         for router, _ in peers))
        asked = str(query.q.qname).lower()
        found = set()
        for (_, subnet), answer in zip(peers, answers, strict=True):
            for rr in answer.rr if answer is not None else ():
                if rr.rtype in (QTYPE.A, QTYPE.AAAA) and str(rr.rname).lower() == asked \
                        and ipaddress.ip_address(str(rr.rdata)) in ipaddress.ip_network(subnet):
                    found.add(str(rr.rdata))
        return found

    async def _forward(self, query: DNSRecord) -> DNSRecord | None:
        if not self.upstream:
            reply = query.reply()
            reply.header.rcode = RCODE.REFUSED   # not ours to answer, and not enabled
            return reply
        for server in self.upstream:
            if self._out is None:
                break
            answer = await self._out.ask(query, server, UPSTREAM_TIMEOUT_S)
            if answer is not None:
                answer.header.id = query.header.id
                self.forwarded += 1
                return answer
        reply = query.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply


def _bound(family: int, address: str, port: int) -> socket.socket:
    """A UDP socket bound in the calling thread's namespace (run through netns.run_in)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
