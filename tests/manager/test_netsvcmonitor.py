import asyncio

from nsmd.caller import CALLER, Caller
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain
from nsmd.manager.netsvcmonitor import ServiceMonitor
from nsmd.model import (
    Destination,
    Match,
    NetworkService,
    NetworkServiceEndpoint,
    ServiceLabels,
)
from nsmd.testing.elements import Count


def only(app):
    return NetworkService(name="svc", matches=[Match(routes=[Destination(
        destination_selector={"app": app})])])


async def setup(registry, make_request, outer=None):
    await registry.register_service(NetworkService(name="svc"))
    for name in ("a", "b"):
        await registry.register_endpoint(NetworkServiceEndpoint(
            name=name, network_service_names=["svc"],
            network_service_labels={"svc": ServiceLabels(labels={"app": name})}))
    begin, count = Begin(), Count()
    chain = Chain(begin, count)
    dropped = []
    begin.on_dropped.append(lambda conn, owner: dropped.append(conn.id))

    async def connect(conn_id, endpoint, peer=""):
        request = make_request(conn_id)
        request.connection.network_service_endpoint_name = endpoint
        token = CALLER.set(Caller("peer", spiffe_id=peer) if peer else None)
        try:
            await chain.request(request)
        finally:
            CALLER.reset(token)

    return begin, ServiceMonitor(registry, begin, outer or {}), connect, dropped


async def test_connections_the_new_matches_disallow_are_closed(registry, make_request):
    begin, monitor, connect, dropped = await setup(registry, make_request)
    await connect("on-a", "a")
    await connect("on-b", "b")
    await connect("gone", "nowhere")      # endpoint not registered: left to liveness
    await connect("peers", "a", peer="spiffe://test.nsmd/node/n2")  # its host selects
    assert await monitor.check(only("a")) == ["on-b"]
    assert dropped == ["on-b"] and begin.get("on-b") is None
    assert set(begin.ids()) == {"on-a", "gone", "peers"}


async def test_an_onward_connection_closes_the_passthrough_s_own(registry, make_request):
    begin, monitor, connect, dropped = await setup(registry, make_request,
                                                   outer={"onward": "firewall-side"})
    await connect("firewall-side", "a", peer="spiffe://test.nsmd/node/n2")
    await connect("onward", "b")
    assert await monitor.check(only("a")) == ["firewall-side"]
    assert dropped == ["firewall-side"]


async def test_changes_are_followed_from_the_registry(registry, make_request):
    begin, monitor, connect, dropped = await setup(registry, make_request)
    await connect("on-a", "a")
    stopping = asyncio.Event()
    task = asyncio.ensure_future(monitor.run(stopping))
    await registry.register_service(only("a"))
    await asyncio.sleep(0.01)
    assert dropped == []
    await registry.unregister_service("svc")      # a deleted service moves nobody
    await registry.register_service(only("b"))
    for _ in range(100):
        if dropped:
            break
        await asyncio.sleep(0.01)
    assert dropped == ["on-a"]
    stopping.set()
    await asyncio.wait_for(task, 1)
