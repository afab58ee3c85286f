"""vL3: endpoints on several hosts serving one virtual L3 network. Each takes its own
subnet (agreed through the registry), they join in a full mesh of vWires, and a client
on one host reaches a client on another by address through its own host's endpoint and
the other's."""

from __future__ import annotations

import ipaddress

from nsmd.testing.sandbox import host, ping, wait_until
from tests.integration.beds import build_hosts

PREFIX = "100.64.0.0/16"
VL3_SERVICE = """
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: vl3}
spec:
  payload: IP
  matches:
    - source_selector: {}
      routes:
        - destination_selector: {nodeName: "{{.nodeName}}"}
"""


def vl3_endpoint(name: str, router_ns: str, prefix: str = PREFIX, length: int = 24) -> str:
    return f"""
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {{name: {name}}}
spec:
  network_service_names: [vl3]
  nsmd: {{netns: {router_ns}, vl3: {{prefix: {prefix}, subnet_prefix_len: {length}}}}}
"""


def subnets_of(d) -> dict[str, str]:
    return {e["name"]: e["network_service_labels"]["vl3"]["labels"].get("vl3Subnet", "")
            for e in d.cli_json("get", "endpoints")}


def address(conn: dict) -> str:
    return host(conn["context"]["ip_context"]["src_ip_addrs"][0])


def mesh_vwires(daemons) -> set[str]:
    """The mesh vWires (by the asking endpoint's segment id) all daemons see."""
    return {c["path"]["path_segments"][0]["id"] for d in daemons
            for c in d.cli_json("get", "connections") if c["labels"].get("vl3Peer")}


def build_vl3(netns, daemon, tmp_path, names=("n1", "n2", "n3")):
    daemons, _ = build_hosts(netns, daemon, tmp_path, list(names), {"NSMD_KEEPALIVE_S": "0.5"})
    daemons[0].cli("apply", "-f", "-", stdin=VL3_SERVICE)
    for d in daemons:
        d.cli("apply", "-f", "-", stdin=vl3_endpoint(f"vl3-{d.name}", netns(f"r-{d.name}")))
    wait_until(lambda: all(len([s for s in subnets_of(d).values() if s]) == len(daemons)
                           for d in daemons))
    return daemons


def test_clients_on_different_hosts_reach_each_other_over_vl3(netns, daemon, tmp_path):
    daemons = build_vl3(netns, daemon, tmp_path)
    held = subnets_of(daemons[0])
    nets = [ipaddress.ip_network(s) for s in held.values()]
    assert all(n.subnet_of(ipaddress.ip_network(PREFIX)) and n.prefixlen == 24 for n in nets)
    assert len(set(nets)) == 3  # each endpoint its own subnet
    clients = {}
    for d in daemons:
        ns = netns(f"c-{d.name}")
        conn = d.cli_json("connect", "vl3", "--netns", ns)
        assert conn["network_service_endpoint_name"] == f"vl3-{d.name}"
        assert ipaddress.ip_address(address(conn)) in ipaddress.ip_network(held[f"vl3-{d.name}"])
        assert [r["prefix"] for r in conn["context"]["ip_context"]["src_routes"]] == [PREFIX]
        clients[d.name] = (ns, address(conn), conn)
    # the mesh: one vWire per pair of endpoints, held by the one whose name sorts first
    wait_until(lambda: len(mesh_vwires(daemons)) == 3)
    for src in clients.values():
        for dst in clients.values():
            if src is not dst:
                assert ping(src[0], dst[1], 2).returncode == 0, (src[1], dst[1])
