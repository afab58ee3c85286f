import asyncio

import pytest

from nsmd.errors import NsmdError
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain
from nsmd.manager.monitor import Monitor, MonitorScopeSelector, SegmentSelector
from nsmd.manager.updatepath import UpdatePath
from nsmd.model import NetworkServiceRequest
from nsmd.testing.elements import InjectError


async def next_event(sub):
    return await asyncio.wait_for(anext(sub), 1)


async def test_initial_state_then_updates_then_delete(make_request):
    begin = Begin()
    monitor = Monitor(begin)
    chain = Chain(UpdatePath("mgr"), begin, monitor)
    await chain.request(make_request("c1", service="a"))
    sub = monitor.subscribe(MonitorScopeSelector())
    initial = await next_event(sub)
    assert initial.type == "INITIAL_STATE_TRANSFER" and len(initial.connections) == 1
    conn = await chain.request(make_request("c2", service="b"))
    update = await next_event(sub)
    assert update.type == "UPDATE" and list(update.connections) == [
        conn.path.path_segments[1].id]
    await chain.close(conn)
    assert (await next_event(sub)).type == "DELETE"
    sub.close()
    assert not monitor.subscribers


@pytest.mark.parametrize("selector, expected", [
    (MonitorScopeSelector(network_services=["a"]), {"c1"}),
    (MonitorScopeSelector(path_segments=[SegmentSelector(id="c2")]), {"c2"}),
    (MonitorScopeSelector(path_segments=[SegmentSelector(name="nsc"),
                                         SegmentSelector(name="mgr")]), {"c1", "c2"}),
    # segments must be contiguous and in order
    (MonitorScopeSelector(path_segments=[SegmentSelector(name="mgr"),
                                         SegmentSelector(name="nsc")]), set()),
    (MonitorScopeSelector(path_segments=[SegmentSelector(id="c1")], network_services=["b"]),
     set()),
])
async def test_selectors_filter_like_nsm(make_request, selector, expected):
    begin = Begin()
    monitor = Monitor(begin)
    chain = Chain(UpdatePath("mgr"), begin, monitor)
    await chain.request(make_request("c1", service="a"))
    await chain.request(make_request("c2", service="b"))
    sub = monitor.subscribe(selector)
    initial = await next_event(sub)
    assert {c.path.path_segments[0].id for c in initial.connections.values()} == expected


async def test_a_failed_refresh_reports_the_connection_down(make_request):
    begin = Begin()
    monitor = Monitor(begin)
    chain = Chain(UpdatePath("mgr"), begin, monitor, InjectError(fail_requests={1}))
    conn = await chain.request(make_request("c1"))
    sub = monitor.subscribe(MonitorScopeSelector())
    await next_event(sub)
    with pytest.raises(NsmdError):
        await chain.request(NetworkServiceRequest(connection=conn))
    event = await next_event(sub)
    assert event.type == "UPDATE" and next(iter(event.connections.values())).state == "DOWN"
