import asyncio

from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain
from nsmd.manager.timeout import Timeout
from nsmd.manager.updatepath import UpdatePath
from nsmd.testing.elements import Count


def build(clock):
    begin = Begin()
    timeout = Timeout(clock, begin)
    count = Count()
    return Chain(UpdatePath("mgr"), begin, timeout, count), begin, timeout, count


async def test_a_connection_whose_caller_stops_refreshing_is_closed(clock, make_request):
    chain, begin, timeout, count = build(clock)
    conn = await chain.request(make_request("c1", expires=clock.now + 30))
    clock.advance(29)
    await asyncio.sleep(0)
    assert count.closes == 0
    clock.advance(2)
    await asyncio.sleep(0.01)
    assert count.closes == 1 and begin.get(conn.path.path_segments[1].id) is None


async def test_refresh_re_arms_and_close_disarms(clock, make_request):
    chain, begin, timeout, count = build(clock)
    conn = await chain.request(make_request("c1", expires=clock.now + 30))
    clock.advance(20)
    conn.path.path_segments[0].expires = clock.now + 30
    conn = await chain.request(
        type(make_request())(connection=conn))  # refresh with a later expiry
    clock.advance(20)
    await asyncio.sleep(0.01)
    assert count.closes == 0
    await chain.close(conn)
    assert timeout.armed() == set() and count.closes == 1
    clock.advance(100)
    await asyncio.sleep(0.01)
    assert count.closes == 1
