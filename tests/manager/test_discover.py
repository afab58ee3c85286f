import pytest

from nsmd.errors import NotFound, SelectionError
from nsmd.manager.chain import Chain, Element
from nsmd.manager.discover import Discover
from nsmd.model import (
    Destination,
    Match,
    NetworkService,
    NetworkServiceEndpoint,
    ServiceLabels,
)


class Record(Element):
    """Remembers which endpoint each attempt went to; fails for the names in `broken`."""

    def __init__(self, broken=()):
        self.attempts = []
        self.broken = set(broken)

    async def request(self, request, nxt):
        name = request.connection.network_service_endpoint_name
        self.attempts.append(name)
        if name in self.broken:
            raise SelectionError(f"{name} is down")
        return await nxt.request(request)


async def add(registry, name, service="svc", **labels):
    await registry.register_endpoint(NetworkServiceEndpoint(
        name=name, network_service_names=[service],
        network_service_labels={service: ServiceLabels(labels=labels)}))


async def test_round_robin_over_candidates_shared_by_clients(registry, clock, make_request):
    await registry.register_service(NetworkService(name="svc"))
    for n in ("a", "b", "c"):
        await add(registry, n)
    record = Record()
    chain = Chain(Discover(registry, clock), record)
    for i in range(6):
        conn = await chain.request(make_request(f"c{i}"))
        assert conn.network_service_endpoint_name == record.attempts[-1]
    assert record.attempts == ["a", "b", "c", "a", "b", "c"]


async def test_a_failing_candidate_is_skipped_once(registry, clock, make_request):
    await registry.register_service(NetworkService(name="svc"))
    for n in ("a", "b", "c"):
        await add(registry, n)
    record = Record(broken={"a", "b"})
    conn = await Chain(Discover(registry, clock), record).request(make_request())
    assert record.attempts == ["a", "b", "c"] and conn.network_service_endpoint_name == "c"
    record.broken.add("c")
    with pytest.raises(SelectionError, match="every candidate endpoint of 'svc' failed"):
        await Chain(Discover(registry, clock), record).request(make_request())


async def test_matches_pick_by_client_labels(registry, clock, make_request):
    await registry.register_service(NetworkService(name="svc", matches=[
        Match(source_selector={"tier": "gold"},
              routes=[Destination(destination_selector={"size": "big"})]),
        Match(routes=[Destination(destination_selector={"size": "small"})])]))
    await add(registry, "big", size="big")
    await add(registry, "small", size="small")
    chain = Chain(Discover(registry, clock), Record())
    gold = await chain.request(make_request(labels={"tier": "gold"}))
    other = await chain.request(make_request(labels={"tier": "tin"}))
    assert (gold.network_service_endpoint_name, other.network_service_endpoint_name) == (
        "big", "small")


async def test_errors_name_the_service(registry, clock, make_request):
    chain = Chain(Discover(registry, clock), Record())
    with pytest.raises(NotFound, match="'svc' is not registered"):
        await chain.request(make_request())
    await registry.register_service(NetworkService(name="svc", matches=[
        Match(source_selector={"x": "y"}, routes=[Destination()])]))
    await add(registry, "a")
    with pytest.raises(SelectionError, match="no endpoint of network service 'svc' matches"):
        await chain.request(make_request())
    await registry.register_service(NetworkService(name="other"))
    named = make_request(service="other")
    named.connection.network_service_endpoint_name = "a"   # registered, but for svc only
    with pytest.raises(SelectionError, match="'a' does not offer network service 'other'"):
        await chain.request(named)


async def test_a_named_endpoint_is_used_as_is_and_must_be_alive(registry, clock, make_request):
    await registry.register_service(NetworkService(name="svc"))
    await add(registry, "a")
    await add(registry, "b")
    record = Record()
    chain = Chain(Discover(registry, clock), record)
    req = make_request()
    req.connection.network_service_endpoint_name = "b"
    assert (await chain.request(req)).network_service_endpoint_name == "b"
    clock.now += 61  # expired, even before the expiry timer ran
    req.connection.network_service_endpoint_name = "b"
    with pytest.raises(SelectionError, match="expired or deleted"):
        await chain.request(req)
    with pytest.raises(SelectionError, match="0 endpoint"):
        await chain.request(make_request())


async def test_unreachable_and_left_endpoints_are_tried_last_for_a_while(registry, clock,
                                                                        make_request):
    from nsmd.peer.client import PeerError

    await registry.register_service(NetworkService(name="svc"))
    for n in ("a", "b", "c"):
        await add(registry, n)

    class Unreachable(Record):
        async def request(self, request, nxt):
            name = request.connection.network_service_endpoint_name
            self.attempts.append(name)
            if name in self.broken:
                raise PeerError(f"peer of {name} unreachable")
            return await nxt.request(request)

    record = Unreachable(broken={"a"})
    discover = Discover(registry, clock)
    chain = Chain(discover, record)
    await chain.request(make_request("c0"))          # a fails (its host is away), b serves
    record.broken.clear()
    for i in range(3):
        await chain.request(make_request(f"c{i + 1}"))
    assert record.attempts == ["a", "b", "b", "c", "b"]  # a not first while suspect
    clock.advance(11)                                 # a is no suspect any more ...
    await chain.request(make_request("c8"))
    assert record.attempts[-1] == "b"
    discover.suspect("c")                             # ... c is: a client just left it
    await chain.request(make_request("c9"))           # round robin would start at c
    assert record.attempts[-1] == "a"
