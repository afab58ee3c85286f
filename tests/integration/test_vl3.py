"""vL3: endpoints on several hosts serving one virtual L3 network. Each takes its own
subnet (agreed through the registry), they join in a full mesh of vWires, and a client
on one host reaches a client on another by address through its own host's endpoint and
the other's."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys

from nsmd.testing.sandbox import VL3_PREFIX, ping, vl3_endpoint_manifest, wait_until
from tests.integration.beds import (
    address,
    build_vl3,
    lookup,
    mesh_vwires,
    subnets_of,
)


def test_clients_on_different_hosts_reach_each_other_over_vl3(netns, daemon, tmp_path):
    daemons = build_vl3(netns, daemon, tmp_path)
    held = subnets_of(daemons[0])
    nets = [ipaddress.ip_network(s) for s in held.values()]
    assert all(n.subnet_of(ipaddress.ip_network(VL3_PREFIX)) and n.prefixlen == 24 for n in nets)
    assert len(set(nets)) == 3  # each endpoint its own subnet
    clients = {}
    for d in daemons:
        ns = netns(f"c-{d.name}")
        conn = d.cli_json("connect", "vl3", "--netns", ns)
        assert conn["network_service_endpoint_name"] == f"vl3-{d.name}"
        assert ipaddress.ip_address(address(conn)) in ipaddress.ip_network(held[f"vl3-{d.name}"])
        assert [r["prefix"] for r in conn["context"]["ip_context"]["src_routes"]] == [VL3_PREFIX]
        clients[d.name] = (ns, address(conn), conn)
    # the mesh: one vWire per pair of endpoints, held by the one whose name sorts first
    wait_until(lambda: len(mesh_vwires(daemons)) == 3)
    for src in clients.values():
        for dst in clients.values():
            if src is not dst:
                assert ping(src[0], dst[1], 2).returncode == 0, (src[1], dst[1])


def test_vl3_clients_find_each_other_by_name_and_other_names_still_resolve(
        netns, daemon, tmp_path):
    # the "host's resolver" of n1: a fixed answer on n1's own loopback
    daemons = build_vl3(netns, daemon, tmp_path, env={"NSMD_DNS_UPSTREAM": "127.0.0.1:5353",
                                                      "NSMD_VL3_DNS_FORWARD": "1"})
    node_n1 = [ns for ns in netns.__self__.made if ns.endswith("-n1")][0]
    upstream = subprocess.Popen(
        ["ip", "netns", "exec", node_n1, sys.executable, "-m", "dnslib.fixedresolver",
         "--address", "127.0.0.1", "--port", "5353", "--response", ". 60 IN A 198.51.100.7",
         "--log=-request,-reply,-truncated,-error,-recv,-send,-data"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        web_ns, other_ns = netns("c-web"), netns("c-other")
        web = daemons[0].cli_json("connect", "vl3", "--netns", web_ns, "--client-name", "web")
        other = daemons[2].cli_json("connect", "vl3", "--netns", other_ns)
        resolv = f"/etc/netns/{web_ns}/resolv.conf"
        assert os.path.exists(resolv)
        wait_until(lambda: lookup(other_ns, "web.vl3") == [address(web)], timeout=10)
        assert lookup(other_ns, "web") == [address(web)]  # the service is the search domain
        assert lookup(web_ns, f"{other_ns}.vl3") == [address(other)]  # default: netns name
        assert lookup(web_ns, "nobody.vl3") == []
        # names outside the zone go to the host's resolver
        wait_until(lambda: lookup(web_ns, "www.example.test") == ["198.51.100.7"], timeout=5)
        assert ping(other_ns, "web.vl3", 1).returncode == 0
        daemons[0].cli("close", web["id"])
        assert not os.path.exists(resolv)
        wait_until(lambda: lookup(other_ns, "web.vl3") == [], timeout=10)
    finally:
        upstream.terminate()
        upstream.wait(timeout=5)


def test_endpoints_leave_and_join_the_mesh_and_addresses_survive_a_restart(
        netns, daemon, tmp_path):
    d1, d2, d3 = build_vl3(netns, daemon, tmp_path, names=("n1", "n2", "n3"))
    c1, c2 = netns("c-1"), netns("c-2")
    first = d1.cli_json("connect", "vl3", "--netns", c1)
    second = d2.cli_json("connect", "vl3", "--netns", c2)
    wait_until(lambda: len(mesh_vwires([d1, d2, d3])) == 3)
    # an endpoint without a namespace of its own routes in one the daemon makes
    extra = f"{netns.__self__.prefix}-e4"
    router_ns = f"nsmd-vl3-{extra}"
    try:
        d3.cli("apply", "-f", "-", stdin=vl3_endpoint_manifest(extra, ""))
        assert os.path.exists(f"/var/run/netns/{router_ns}")
        wait_until(lambda: len(mesh_vwires([d1, d2, d3])) == 6)  # 4 endpoints: 6 pairs
        d3.cli("delete", "endpoint", extra)
        wait_until(lambda: len(mesh_vwires([d1, d2, d3])) == 3)
        assert not os.path.exists(f"/var/run/netns/{router_ns}")
    finally:
        subprocess.run(["ip", "netns", "delete", router_ns], capture_output=True, check=False)
    # the client host's daemon dies and comes back: same address, reachable again
    d2.stop(sig=signal.SIGKILL)
    d2.start()
    wait_until(lambda: ping(c1, address(second), 1).returncode == 0, timeout=15, interval=0.3)
    (again,) = [c for c in d2.cli_json("get", "connections") if c["id"] == second["id"]]
    assert address(again) == address(second)
    assert ping(c2, address(first), 1).returncode == 0
    assert len(mesh_vwires([d1, d2, d3])) == 3  # the mesh came back whole, no duplicates
