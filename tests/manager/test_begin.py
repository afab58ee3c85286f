import asyncio

import pytest

from nsmd.caller import CALLER, Caller
from nsmd.errors import NsmdError
from nsmd.manager.begin import Begin, Owner
from nsmd.manager.chain import Chain, Element
from nsmd.model import State
from nsmd.testing.elements import Count, InjectError


class Slow(Element):
    def __init__(self):
        self.active = 0
        self.max_active = 0

    async def request(self, request, nxt):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        return await nxt.request(request)


async def test_requests_for_one_connection_run_one_at_a_time(make_request):
    slow = Slow()
    chain = Chain(Begin(), slow)
    await asyncio.gather(*(chain.request(make_request("same")) for _ in range(3)))
    assert slow.max_active == 1
    await asyncio.gather(*(chain.request(make_request(f"c{i}")) for i in range(3)))
    assert slow.max_active > 1


async def test_close_tears_down_what_was_returned_and_unknown_ids_are_a_no_op(make_request):
    begin, count = Begin(), Count()
    chain = Chain(begin, count)
    conn = await chain.request(make_request("c1"))
    assert conn.state == State.UP and begin.get("c1") is not None
    stale = conn.clone()
    stale.network_service = "tampered"
    await chain.close(stale)
    assert count.closes == 1 and begin.get("c1") is None
    await chain.close(stale)
    assert count.closes == 1


async def test_reselect_closes_the_old_path_first(make_request):
    begin, count = Begin(), Count()
    chain = Chain(begin, count)
    await chain.request(make_request("c1"))
    again = make_request("c1")
    again.connection.state = State.RESELECT_REQUESTED
    conn = await chain.request(again)
    assert count.closes == 1 and count.requests == 2 and conn.state == State.UP


async def test_a_failed_reselect_keeps_the_connection_down_for_another_try(make_request):
    begin = Begin()
    chain = Chain(begin, InjectError(fail_requests={1}))
    await chain.request(make_request("c1"))
    with pytest.raises(NsmdError):
        await begin.request_again("c1", reselect=True)
    assert begin.get("c1").state == State.DOWN
    conn = await begin.request_again("c1", reselect=True)
    assert conn.state == State.UP


async def test_replays_and_dropped_notifications(make_request):
    begin, count = Begin(), Count()
    dropped = []
    begin.on_dropped.append(lambda conn, owner: dropped.append((conn.id, owner)))
    chain = Chain(begin, count)
    await chain.request(make_request("c1"))
    peer = Caller("peer", spiffe_id="spiffe://test.nsmd/node/n2", url="https://192.0.2.2:7000")
    token = CALLER.set(peer)
    try:
        await chain.request(make_request("c2"))
    finally:
        CALLER.reset(token)
    await begin.request_again("c1")
    assert count.requests == 3
    assert await begin.request_again("gone") is None
    assert await begin.close_by_id("c1") and await begin.close_by_id("c2")
    assert dropped == [("c1", Owner()), ("c2", Owner(peer.spiffe_id, peer.url))]
    assert count.closes == 2
    assert not await begin.close_by_id("c1")


async def test_kept_connections_share_their_chain_and_owner_and_stay_small(make_request):
    import tracemalloc
    import uuid

    begin = Begin()
    chain = Chain(begin, Count())
    ids = [str(uuid.uuid4()) for _ in range(300)]  # made before measuring: callers own them
    requests = []
    for conn_id in ids:
        request = make_request(conn_id, labels={"nodeName": "n1", "app": "web"})
        request.connection.network_service_endpoint_name = "svc-endpoint-1"
        requests.append(request)
    await chain.request(requests[0])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for request in requests[1:]:
            await chain.request(request)
        per_connection = (tracemalloc.get_traced_memory()[0] - before) / (len(ids) - 1)
    finally:
        tracemalloc.stop()
    # packed and deflated against the first (~60 bytes here), an entry of three slots, a
    # dict slot; a Next or an Owner per entry, or undeflated packing, would exceed this
    assert per_connection < 190, per_connection
    assert all(begin.get(i).labels == {"nodeName": "n1", "app": "web"} for i in ids)
