import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsmd.errors import NsmdError
from nsmd.hosting import Hosting
from nsmd.ipam import Pool
from nsmd.manager.chain import Chain
from nsmd.manager.ipam import Ipam
from nsmd.model import NetworkServiceEndpoint, NetworkServiceRequest
from nsmd.model.endpoint_spec import EndpointSpec, IpamSpec
from nsmd.registry import Registry
from nsmd.state import StateDB
from nsmd.testing.elements import InjectError


@pytest.fixture
async def env(tmp_path, clock):
    db = StateDB(str(tmp_path))
    registry = Registry(db, clock)
    hosting = Hosting(db, registry, clock, "unix:///s")
    await hosting.apply(NetworkServiceEndpoint(name="e", network_service_names=["svc"]),
                  EndpointSpec(ipam=IpamSpec(prefix="169.254.0.0/29",
                                             exclude_prefixes=["169.254.0.3/32"])))
    yield db, hosting
    hosting.close()
    registry.close()
    db.close()


def request_for(make_request, conn_id):
    req = make_request(conn_id)
    req.connection.network_service_endpoint_name = "e"
    return req


def addrs(conn):
    ipc = conn.context.ip_context
    return ipc.src_ip_addrs[0], ipc.dst_ip_addrs[0]


async def test_pool_hands_out_pairs_and_skips_excluded_and_used():
    pool = Pool("10.0.0.0/29")
    assert pool.allocate_pair() == ("10.0.0.1", "10.0.0.2")
    assert pool.allocate_pair(["10.0.0.3/32"]) == ("10.0.0.4", "10.0.0.5")
    with pytest.raises(NsmdError, match="exhausted"):
        pool.allocate_pair(["10.0.0.3/32"])  # .6 is left, .7 is the broadcast address
    assert pool.is_free("10.0.0.6")  # a failed pair gives back its first half
    pool.release("10.0.0.1")
    assert pool.allocate_pair(["10.0.0.3/32"]) == ("10.0.0.1", "10.0.0.6")



def test_excluded_hosts_ranges_and_v6_are_each_avoided_and_bad_ones_named():
    pool = Pool("10.0.0.0/28")
    # hosts with and without /32, a range, another family's host: only ours count
    excluded = ["10.0.0.1", "10.0.0.2/32", "10.0.0.4/31", "fd00::3/128", "10.0.0.3/32"]
    assert pool.allocate_pair(excluded) == ("10.0.0.6", "10.0.0.7")
    v6 = Pool("fd00::/125")
    assert v6.allocate_pair(["fd00::1", "fd00::2/128", "10.0.0.3/32"]) == ("fd00::3", "fd00::4")
    with pytest.raises(ValueError, match="10.0.0.300"):
        pool.allocate(["10.0.0.300/32"])
    assert pool.is_free("10.0.0.8")  # the refused request took nothing


class ReferencePool:
    """Next fit read plainly: every address from the cursor on, once round (small pools)."""

    def __init__(self, prefix: str):
        self.hosts = list(ipaddress.ip_network(prefix).hosts())
        self.used: set = set()
        self.cursor = 0

    def allocate(self, excluded: list[str]) -> str | None:
        nets = [ipaddress.ip_network(e, strict=False) for e in excluded]
        for step in range(len(self.hosts)):
            i = (self.cursor + step) % len(self.hosts)
            ip = self.hosts[i]
            if ip not in self.used and not any(ip.version == n.version and ip in n
                                               for n in nets):
                self.used.add(ip)
                self.cursor = i + 1
                return str(ip)
        return None


prefixes = st.builds(lambda base, length: f"10.0.0.{base}/{length}",
                     st.integers(0, 255), st.integers(24, 32)) | st.sampled_from(
                         ["0.0.0.0/0", "fd00::/8", "10.0.0.0/8", "9.0.0.0/8"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(prefixes, max_size=6)), max_size=40))
def test_allocation_matches_a_plain_walk(steps):
    pool, reference = Pool("10.0.0.0/27"), ReferencePool("10.0.0.0/27")
    held: list[str] = []
    for release, excluded in steps:
        if release and held:
            address = held.pop(0)
            pool.release(address)
            reference.used.discard(ipaddress.ip_address(address))
            continue
        excluded = [str(ipaddress.ip_network(e, strict=False)) for e in excluded]
        expected = reference.allocate(excluded)
        if expected is None:
            with pytest.raises(NsmdError, match="exhausted"):
                pool.allocate(excluded)
        else:
            assert pool.allocate(excluded) == expected
            held.append(expected)


def test_exclusions_wider_than_the_pool_cost_one_jump():
    v6 = Pool("2001:db8::/64")
    with pytest.raises(NsmdError, match="exhausted"):
        v6.allocate(["::/0"])
    assert v6.allocate(["2001:db8::/65"]) == "2001:db8:0:0:8000::"
    big = Pool("100.64.0.0/10")
    assert big.allocate(["100.64.0.0/11", "100.96.0.0/12", "100.112.0.0/13",
                         "100.120.0.0/14", "100.124.0.0/15", "100.126.0.0/16",
                         "100.127.0.0/17", "100.127.128.0/18",
                         "100.127.192.0/19"]) == "100.127.224.0"
    with pytest.raises(ValueError, match="at most 16384"):
        big.allocate([f"100.64.{i // 256}.{i % 256}" for i in range(16385)])


async def test_pairs_with_mutual_routes_distinct_per_connection(env, make_request):
    db, hosting = env
    chain = Chain(Ipam(hosting, db))
    first = await chain.request(request_for(make_request, "c1"))
    second = await chain.request(request_for(make_request, "c2"))
    assert addrs(first) == ("169.254.0.2/32", "169.254.0.1/32")
    assert addrs(second) == ("169.254.0.5/32", "169.254.0.4/32")  # .3 is excluded
    ipc = first.context.ip_context
    assert [r.prefix for r in ipc.src_routes] == ["169.254.0.1/32"]
    assert [r.prefix for r in ipc.dst_routes] == ["169.254.0.2/32"]


async def test_refresh_keeps_addresses_and_close_frees_them(env, make_request):
    db, hosting = env
    chain = Chain(Ipam(hosting, db))
    first = await chain.request(request_for(make_request, "c1"))
    again = await chain.request(NetworkServiceRequest(connection=first))
    assert addrs(again) == addrs(first)
    await chain.close(first)
    other = await chain.request(request_for(make_request, "c3"))
    assert addrs(other) != addrs(first)  # the cursor moves on
    assert db.get("ipam", "c1") is None


async def test_excluded_prefixes_from_the_request_are_avoided(env, make_request):
    db, hosting = env
    req = request_for(make_request, "c1")
    req.connection.context.ip_context.excluded_prefixes = ["169.254.0.0/30"]
    conn = await Chain(Ipam(hosting, db)).request(req)
    assert addrs(conn) == ("169.254.0.5/32", "169.254.0.4/32")


async def test_a_failure_downstream_returns_the_addresses(env, make_request):
    db, hosting = env
    ipam = Ipam(hosting, db)
    with pytest.raises(NsmdError):
        await Chain(ipam, InjectError(fail_requests={0})).request(request_for(make_request, "c1"))
    assert ipam.leases == {}
    # the pool (5 usable addresses) still has room for two pairs: nothing leaked
    await Chain(ipam).request(request_for(make_request, "c2"))
    await Chain(ipam).request(request_for(make_request, "c3"))


async def test_leases_survive_a_restart_and_restores_recover_addresses(env, make_request):
    db, hosting = env
    first = await Chain(Ipam(hosting, db)).request(request_for(make_request, "c1"))
    restarted = Ipam(hosting, db)
    assert restarted.leases["c1"].dst == "169.254.0.1"
    second = await Chain(restarted).request(request_for(make_request, "c2"))
    assert addrs(second) == ("169.254.0.5/32", "169.254.0.4/32")
    await Chain(restarted).close(second)
    # a request that carries free addresses (a restore) gets exactly those back
    req = request_for(make_request, "c3")
    req.connection.context = second.context
    assert addrs(await Chain(restarted).request(req)) == addrs(second)
    assert addrs(first) == ("169.254.0.2/32", "169.254.0.1/32")


async def test_sweep_releases_leases_nobody_claims(env, make_request):
    db, hosting = env
    ipam = Ipam(hosting, db)
    kept = await Chain(ipam).request(request_for(make_request, "c1"))
    await Chain(ipam).request(request_for(make_request, "c2"))
    assert ipam.sweep({"c1"}) == ["c2"]
    assert set(ipam.leases) == {"c1"} and db.get("ipam", "c2") is None
    again = await Chain(ipam).request(request_for(make_request, "c3"))
    assert addrs(again) != addrs(kept)

