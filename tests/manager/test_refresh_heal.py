import asyncio

from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain, Element
from nsmd.manager.heal import Heal
from nsmd.manager.refresh import Refresh, refresh_delay
from nsmd.manager.updatetoken import UpdateToken
from nsmd.model import Connection, Path, PathSegment
from nsmd.testing.elements import Count, InjectError


class PickEndpoint(Element):
    """Stands in for discover: names an endpoint unless the request already has one."""

    def __init__(self):
        self.picked = 0

    async def request(self, request, nxt):
        if not request.connection.network_service_endpoint_name:
            self.picked += 1
            request.connection.network_service_endpoint_name = f"nse-{self.picked}"
        return await nxt.request(request)


def build(clock, failures=()):
    begin = Begin()
    heal = Heal(clock, begin)
    refresh = Refresh(clock, begin, heal)
    count, pick = Count(), PickEndpoint()
    inject = InjectError(fail_requests=set(failures))
    chain = Chain(heal, begin, UpdateToken(clock, 600), refresh, pick, inject, count)
    return chain, begin, refresh, heal, count, pick


def test_delay_is_a_third_of_the_earliest_remaining_lifetime():
    conn = Connection(path=Path(0, [PathSegment(expires=1000 + 90), PathSegment(expires=1060)]))
    assert refresh_delay(conn, 1000) == 20
    assert refresh_delay(Connection(path=Path(0, [PathSegment()])), 1000) is None


async def test_connections_are_refreshed_at_one_third_of_their_lifetime(clock, make_request):
    chain, begin, refresh, heal, count, _ = build(clock)
    await chain.request(make_request("c1"))
    assert refresh.armed()["c1"] == clock.now + 200
    clock.advance(199)
    await asyncio.sleep(0)
    assert count.requests == 1
    clock.advance(1)
    await asyncio.sleep(0.01)
    assert count.requests == 2
    assert refresh.armed()["c1"] == clock.now + 200  # re-armed from the new expiry
    await chain.close(begin.get("c1"))
    assert refresh.armed() == {}


async def test_a_failed_refresh_heals_by_reselecting(clock, make_request):
    chain, begin, refresh, heal, count, pick = build(clock, failures={1})
    first = await chain.request(make_request("c1"))
    assert first.network_service_endpoint_name == "nse-1"
    clock.advance(200)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not heal.healing() and count.requests >= 2:
            break
    conn = begin.get("c1")
    assert conn.network_service_endpoint_name == "nse-2"  # reselected afresh
    assert count.closes == 1  # the old path was closed first
    assert conn.state == "UP"


async def test_heal_retries_until_a_reselect_succeeds(clock, make_request):
    chain, begin, refresh, heal, count, pick = build(clock, failures={1, 2})
    await chain.request(make_request("c1"))
    heal.start("c1")
    heal.start("c1")  # already healing: no second task
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not heal.healing():
            break
    assert begin.get("c1").state == "UP" and pick.picked == 4  # first + 3 reselects


async def test_closing_stops_healing(clock, make_request):
    chain, begin, refresh, heal, count, pick = build(clock, failures=set(range(1, 100)))
    await chain.request(make_request("c1"))
    heal.start("c1")
    await asyncio.sleep(0.05)
    await chain.close(begin.get("c1"))
    await asyncio.sleep(0.01)
    assert heal.healing() == set() and begin.get("c1") is None
