"""The vL3 resolver's answers, on loopback sockets (the router namespace and the mesh are
tested in tests/integration/test_vl3.py)."""

import asyncio

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from nsmd.config import dns_servers
from nsmd.dnsclient import MAX_IN_FLIGHT, DnsExchange
from nsmd.errors import ValidationError
from nsmd.vl3.dns import MAX_PENDING, Resolver, upstream_servers

NAMES = {"web": {"100.64.0.2"}, "db": {"100.64.0.3", "fd00::3"}}


def resolver(peers=(), upstream=()) -> Resolver:
    return Resolver("vl3", lambda label: set(NAMES.get(label, ())), lambda: list(peers),
                    list(upstream))


async def test_names_of_the_zone_come_from_the_endpoints_clients():
    r = resolver()
    reply = await r.resolve(DNSRecord.question("web.vl3"))
    assert [str(rr.rdata) for rr in reply.rr] == ["100.64.0.2"]
    assert reply.rr[0].ttl == 5
    six = await r.resolve(DNSRecord.question("DB.vl3.", "AAAA"))  # names are case-blind
    assert [str(rr.rdata) for rr in six.rr] == ["fd00::3"]
    missing = await r.resolve(DNSRecord.question("nobody.vl3"))
    assert missing.header.rcode == RCODE.NXDOMAIN and not missing.rr
    nested = await r.resolve(DNSRecord.question("a.web.vl3"))
    assert nested.header.rcode == RCODE.NXDOMAIN


async def test_unknown_names_are_asked_of_the_peers_only_for_clients():
    loop = asyncio.get_running_loop()
    asked = []

    class Peer(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            query = DNSRecord.parse(data)
            asked.append(query.header.rd)
            reply = query.reply()
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("100.64.1.2"), ttl=5))
            # a poisoner's extras: an address outside its subnet, and another name
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("100.64.0.9"), ttl=5))
            reply.add_answer(RR("db.vl3.", QTYPE.A, rdata=A("100.64.1.3"), ttl=5))
            self.transport.sendto(reply.pack(), addr)

    peer, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.2", 0))
    port = peer.get_extra_info("sockname")[1]
    r = Resolver("vl3", lambda label: set(), lambda: [("127.0.0.2", "100.64.1.0/24")], [],
                 port=port)
    await r.start("", "127.0.0.1")  # "" = this namespace (loopback stands in for the mesh)
    try:
        reply = await r.resolve(DNSRecord.question("far.vl3"))
        assert [str(rr.rdata) for rr in reply.rr] == ["100.64.1.2"]
        from_peer = DNSRecord.question("far.vl3")
        from_peer.header.rd = 0  # a peer's question: answered locally, not passed on
        reply = await r.resolve(from_peer)
        assert reply.header.rcode == RCODE.NXDOMAIN
        assert asked == [0]  # the peer was asked once, without recursion
    finally:
        r.close()
        peer.close()


async def test_other_names_are_refused_unless_forwarding_is_enabled():
    reply = await resolver().resolve(DNSRecord.question("www.example.test"))
    assert reply.header.rcode == RCODE.REFUSED


async def test_an_exchange_takes_answers_only_from_the_server_asked_for_the_question():
    loop = asyncio.get_running_loop()
    transport, exchange = await loop.create_datagram_endpoint(
        DnsExchange, local_addr=("127.0.0.1", 0))
    server = ("127.0.0.2", 5300)
    try:
        asking = asyncio.ensure_future(exchange.ask(DNSRecord.question("web.vl3"), server, 2))
        await asyncio.sleep(0)
        (qid,) = exchange.waiting
        forged = DNSRecord.question("web.vl3")
        forged.header.id = qid
        exchange.datagram_received(forged.reply().pack(), ("127.0.0.3", 5300))  # not asked
        other = DNSRecord.question("db.vl3")
        other.header.id = qid
        exchange.datagram_received(other.reply().pack(), server)              # not the question
        assert not asking.done()
        exchange.datagram_received(forged.reply().pack(), server)
        assert (await asking) is not None
        # full: the next question fails at once instead of waiting for an id
        exchange.waiting.update({i: (loop.create_future(), server, ("x.", 1))
                                 for i in range(MAX_IN_FLIGHT)})
        assert await exchange.ask(DNSRecord.question("web.vl3"), server, 5) is None
        assert exchange.refused == 1
    finally:
        transport.close()


async def test_queries_beyond_the_pending_bound_are_dropped_and_counted():
    r = resolver()
    r.pending = MAX_PENDING
    r.datagram_received(DNSRecord.question("web.vl3").pack(), ("127.0.0.1", 5))
    assert r.dropped == 1 and r.pending == MAX_PENDING


async def test_malformed_queries_are_dropped_and_counted():
    r = resolver()
    r.datagram_received(b"\x00\x01garbage", ("127.0.0.1", 5))
    assert r.malformed == 1


def test_upstream_servers_from_config_or_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\n")
    assert upstream_servers([], str(conf)) == [("192.0.2.53", 53), ("fe80::1", 53)]
    assert upstream_servers([("127.0.0.1", 5353)], str(conf)) == [("127.0.0.1", 5353)]
    assert dns_servers("127.0.0.1:5353, [::1]:53,192.0.2.1") == [
        ("127.0.0.1", 5353), ("::1", 53), ("192.0.2.1", 53)]
    with pytest.raises(ValidationError, match="dns-upstream"):
        dns_servers("resolver.example:53")
