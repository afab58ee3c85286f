import pytest

from nsmd.errors import NsmdError
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain, Element
from nsmd.manager.excluded import ExcludedPrefixes
from nsmd.model import Mechanism


class Endpoint(Element):
    """Records the excluded prefixes each request brings; hands out 100.64.0.N."""

    def __init__(self):
        self.seen: dict[str, list[list[str]]] = {}
        self.given = 0
        self.refuse = ""

    async def request(self, request, nxt):
        conn = request.connection
        if conn.id == self.refuse:
            raise NsmdError("no endpoint")
        self.seen.setdefault(conn.id, []).append(list(conn.context.ip_context.excluded_prefixes))
        if not conn.context.ip_context.src_ip_addrs:
            self.given += 1
            conn.context.ip_context.src_ip_addrs = [f"100.64.0.{self.given}/32"]
        conn.mechanism = request.mechanism_preferences[0]
        return conn

    async def close(self, conn, nxt):
        return None


def chain_with(begin: Begin):
    endpoint = Endpoint()
    return Chain(begin, ExcludedPrefixes(), endpoint), endpoint


def request_in(make_request, conn_id, netns):
    req = make_request(conn_id)
    req.mechanism_preferences = [Mechanism(type="KERNEL", parameters={"netns": netns})]
    return req


async def test_each_request_excludes_the_namespaces_other_addresses_and_nothing_is_kept(
        make_request):
    begin = Begin()
    chain, endpoint = chain_with(begin)
    await chain.request(request_in(make_request, "a", "ns1"))
    await chain.request(request_in(make_request, "b", "ns2"))   # another namespace
    third = await chain.request(request_in(make_request, "c", "ns1"))
    assert endpoint.seen["a"] == [[]]
    assert endpoint.seen["c"] == [["100.64.0.1/32"]]             # a's, not b's
    assert third.context.ip_context.excluded_prefixes == []      # not handed back
    await begin.request_again("a")                               # a refresh: worked out again
    assert endpoint.seen["a"][-1] == ["100.64.0.3/32"]           # c's, never its own
    assert all(c.context.ip_context.excluded_prefixes == [] for c in begin.connections())


async def test_closed_connections_stop_being_excluded_but_a_failed_reselect_keeps_its_own(
        make_request):
    begin = Begin()
    chain, endpoint = chain_with(begin)
    await chain.request(request_in(make_request, "a", "ns1"))
    b = await chain.request(request_in(make_request, "b", "ns1"))
    await chain.close(b)                                          # gone: not excluded
    await chain.request(request_in(make_request, "c", "ns1"))
    assert endpoint.seen["c"] == [["100.64.0.1/32"]]
    endpoint.refuse = "a"   # a's reselect closes its old path, then finds no endpoint
    with pytest.raises(NsmdError):
        await begin.request_again("a", reselect=True)
    await chain.request(request_in(make_request, "d", "ns1"))    # a keeps its addresses
    assert endpoint.seen["d"] == [["100.64.0.1/32", "100.64.0.3/32"]]
