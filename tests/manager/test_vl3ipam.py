import pytest

from nsmd.caller import CALLER, Caller
from nsmd.errors import PermissionDenied
from nsmd.hosting import Hosting
from nsmd.manager.chain import Chain
from nsmd.manager.vl3ipam import Vl3Ipam, dns_name
from nsmd.model import NetworkServiceEndpoint, ServiceLabels
from nsmd.model.endpoint_spec import EndpointSpec, Vl3Spec
from nsmd.registry import Registry
from nsmd.state import StateDB
from nsmd.testing.fake_clock import FakeClock
from nsmd.vl3 import subnets

PEER_ID = "spiffe://td/node/b"


@pytest.fixture
async def env(tmp_path, monkeypatch, make_request):
    async def no_router(ns):
        return None

    monkeypatch.setattr("nsmd.vl3.router.prepare", no_router)
    monkeypatch.setattr("nsmd.netns.exists", lambda ns: True)
    clock = FakeClock()
    db = StateDB(str(tmp_path))
    registry = Registry(db, clock)
    hosting = Hosting(db, registry, clock, "unix:///s")
    await hosting.apply(NetworkServiceEndpoint(name="a", network_service_names=["vl3"]),
                        EndpointSpec(netns="r", vl3=Vl3Spec("100.64.0.0/16", 24)))
    # another daemon's vL3 endpoint, registered by PEER_ID
    await registry.register_endpoint(NetworkServiceEndpoint(
        name="b", network_service_names=["vl3"], network_service_labels={
            "vl3": ServiceLabels({subnets.SUBNET_LABEL: "100.64.1.0/24"})}), owner=PEER_ID)
    ipam = Vl3Ipam(hosting, registry, db, lambda: "")

    def request(conn_id, name="nsc@c1", labels=None):
        req = make_request(conn_id, "vl3", labels, name)
        req.connection.network_service_endpoint_name = "a"
        return req

    yield ipam, request, db, hosting, registry
    hosting.close()
    registry.close()
    db.close()


def ipc(conn):
    return conn.context.ip_context


async def test_clients_get_addresses_of_the_subnet_a_route_to_the_prefix_and_dns(env):
    ipam, request, *_ = env
    chain = Chain(ipam)
    first = await chain.request(request("c1", "web"))
    second = await chain.request(request("c2"))
    assert ipc(first).src_ip_addrs == ["100.64.0.2/32"]
    assert ipc(second).src_ip_addrs == ["100.64.0.3/32"]
    assert ipc(first).dst_ip_addrs == ipc(second).dst_ip_addrs == ["100.64.0.1/32"]
    assert [r.prefix for r in ipc(first).src_routes] == ["100.64.0.0/16"]
    assert [r.prefix for r in ipc(first).dst_routes] == ["100.64.0.2/32"]
    dns = first.context.dns_context.configs[0]
    assert dns.dns_server_ips == ["100.64.0.1"] and dns.search_domains == ["vl3"]
    assert ipam.addresses_of("a", "web") == {"100.64.0.2"}
    assert ipam.addresses_of("a", "c1") == {"100.64.0.3"}  # nsc@NETNS: the namespace
    again = await chain.request(request("c1", "web"))  # a refresh
    assert ipc(again).src_ip_addrs == ["100.64.0.2/32"]
    await chain.close(again)
    assert ipam.addresses_of("a", "web") == set()


async def test_leases_and_names_survive_a_restart(env):
    ipam, request, db, hosting, registry = env
    await Chain(ipam).request(request("c1", "web"))
    restarted = Vl3Ipam(hosting, registry, db, lambda: "")
    assert restarted.addresses_of("a", "web") == {"100.64.0.2"}
    conn = await Chain(restarted).request(request("c1", "web"))
    assert ipc(conn).src_ip_addrs == ["100.64.0.2/32"]
    assert restarted.sweep(set()) == ["c1"]


async def test_a_mesh_request_routes_each_side_to_the_others_subnet(env):
    ipam, request, *_ = env
    token = CALLER.set(Caller("peer", spiffe_id=PEER_ID))
    try:
        conn = await Chain(ipam).request(request("m1", labels={subnets.PEER_LABEL: "b"}))
    finally:
        CALLER.reset(token)
    assert ipc(conn).src_ip_addrs == ["100.64.1.1/32"] and ipc(conn).dst_ip_addrs == [
        "100.64.0.1/32"]
    assert [r.prefix for r in ipc(conn).src_routes] == ["100.64.0.1/32", "100.64.0.0/24"]
    assert [r.prefix for r in ipc(conn).dst_routes] == ["100.64.1.1/32", "100.64.1.0/24"]
    assert not conn.context.dns_context.configs
    assert ipam.leases == {}  # no address of ours taken


@pytest.mark.parametrize("peer, caller, reason", [
    ("b", "spiffe://td/workload/evil", "registered by spiffe://td/node/b"),
    ("nobody", PEER_ID, "no registered vL3 endpoint"),
])
async def test_mesh_requests_only_for_an_endpoint_the_caller_registered(env, peer, caller,
                                                                        reason):
    ipam, request, *_ = env
    token = CALLER.set(Caller("peer", spiffe_id=caller))
    try:
        with pytest.raises(PermissionDenied, match=reason):
            await Chain(ipam).request(request("m1", labels={subnets.PEER_LABEL: peer}))
    finally:
        CALLER.reset(token)


def test_dns_names_are_valid_labels(make_request):
    assert dns_name(make_request(name="nsc@Client_NS.1").connection) == "client-ns-1"
    assert dns_name(make_request(name="nsc@/proc/12/ns/net").connection) == "net"
    assert dns_name(make_request(name="db-primary").connection) == "db-primary"
