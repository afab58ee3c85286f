"""Composition: passthrough endpoints (spec.nsmd.next) run their functions and request the
service onward with their own labels, so the service's matches route the client through
a chain of endpoints to the final one."""

from __future__ import annotations

from nsmd.testing.sandbox import host, ping, sh, wait_until
from tests.integration.beds import build_hosts, build_two_hosts
from tests.integration.test_functions import tcp_connects

CHAIN_SERVICE = """
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: chain}
spec:
  payload: IP
  matches:
    - source_selector: {app: firewall}
      routes: [{destination_selector: {app: gateway}}]
    - routes: [{destination_selector: {app: firewall}}]
"""

FIREWALL = """
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {name: fw}
spec:
  network_service_names: [chain]
  network_service_labels: {chain: {labels: {app: firewall}}}
  nsmd:
    next: {}
    functions:
      - name: firewall
        config:
          default: deny
          rules:
            - {action: allow, proto: icmp}
            - {action: allow, proto: tcp, ports: "8080"}
"""

GATEWAY = """
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {name: gw}
spec:
  network_service_names: [chain]
  network_service_labels: {chain: {labels: {app: gateway}}}
  nsmd: {netns: %s, ipam: {prefix: 169.254.60.0/24}}
"""


def test_a_client_goes_through_a_firewall_to_the_gateway_on_one_host(netns, daemon):
    d = daemon("n1")
    gw_ns, nsc_ns = netns("gw"), netns("nsc")
    d.cli("apply", "-f", "-", stdin="---".join([CHAIN_SERVICE, FIREWALL, GATEWAY % gw_ns]))
    conn = d.cli_json("connect", "chain", "--netns", nsc_ns)
    assert [s["name"] for s in conn["path"]["path_segments"]] == [
        f"nsc@{nsc_ns}", "n1", "fw", "n1", "gw"]
    assert conn["network_service_endpoint_name"] == "fw"
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert target.startswith("169.254.60.")          # the final endpoint's addresses
    assert ping(nsc_ns, target, 2).returncode == 0
    assert tcp_connects(nsc_ns, gw_ns, target, 8080)
    assert not tcp_connects(nsc_ns, gw_ns, target, 80)
    # one vWire, no device for the passthrough hop
    (listed,) = d.cli_json("get", "connections")
    assert listed["id"] == conn["id"]
    metrics = listed["path"]["path_segments"][2]["metrics"]
    assert int(metrics["firewall.rule0_packets"]) >= 2
    assert int(metrics["firewall.default_packets"]) >= 1
    assert sh("ip", "-o", "link", netns=gw_ns).stdout.count("nsm") == 1
    d.cli("close", conn["id"])
    assert d.cli_json("get", "connections") == []
    assert "nsm" not in sh("ip", "-o", "link", netns=gw_ns).stdout
    assert "nsm" not in sh("ip", "-o", "link", netns=nsc_ns).stdout


def test_chains_across_two_hosts(netns, daemon, tmp_path):
    """The firewall on the gateway's host (the tunnel ends in the chain), then on the
    client's host (the chain ends in the tunnel)."""

    near, far, _, nsc_ns, _ = build_two_hosts(netns, daemon, tmp_path,
                                              {"NSMD_KEEPALIVE_S": "0.5"}, service="chain")
    gw_ns = netns("gw")
    far.cli("apply", "-f", "-", stdin="---".join([CHAIN_SERVICE, FIREWALL, GATEWAY % gw_ns]))
    wait_until(lambda: len(near.cli_json("get", "endpoints")) == 3)
    conn = near.cli_json("connect", "chain", "--netns", nsc_ns)
    assert [s["name"] for s in conn["path"]["path_segments"]] == [
        f"nsc@{nsc_ns}", "n1", "n2", "fw", "n2", "gw"]
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 2).returncode == 0
    assert tcp_connects(nsc_ns, gw_ns, target, 8080)
    assert not tcp_connects(nsc_ns, gw_ns, target, 80)
    near.cli("close", conn["id"])
    wait_until(lambda: far.cli_json("get", "connections") == [])
    # now the firewall next to the client: the chain leaves this host through the tunnel
    far.cli("delete", "endpoint", "fw")
    near.cli("apply", "-f", "-", stdin=FIREWALL)
    wait_until(lambda: {e["name"] for e in far.cli_json("get", "endpoints")} >= {"fw"})
    conn = near.cli_json("connect", "chain", "--netns", nsc_ns)
    assert [s["name"] for s in conn["path"]["path_segments"]] == [
        f"nsc@{nsc_ns}", "n1", "fw", "n1", "n2", "gw"]
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 2).returncode == 0
    assert not tcp_connects(nsc_ns, gw_ns, target, 80)
    near.cli("close", conn["id"])
    wait_until(lambda: far.cli_json("get", "connections") == [])
    assert "nsm" not in sh("ip", "-o", "link", netns=gw_ns).stdout


def test_a_hop_between_two_other_hosts_relays_in_the_engine(netns, daemon, tmp_path):
    """client on n1 -> firewall on n2 -> gateway on n3: n2 holds no device, only a relay
    wire between its two tunnels, with the firewall's stage in between."""
    (d1, d2, d3), nodes = build_hosts(netns, daemon, tmp_path, ["n1", "n2", "n3"],
                                      {"NSMD_KEEPALIVE_S": "0.5"})
    n2 = list(nodes)[1]
    gw_ns, nsc_ns = netns("gw"), netns("nsc")
    d3.cli("apply", "-f", "-", stdin=CHAIN_SERVICE + "---" + GATEWAY % gw_ns)
    d2.cli("apply", "-f", "-", stdin=FIREWALL)
    wait_until(lambda: len(d1.cli_json("get", "endpoints")) == 2)
    conn = d1.cli_json("connect", "chain", "--netns", nsc_ns)
    assert [s["name"] for s in conn["path"]["path_segments"]] == [
        f"nsc@{nsc_ns}", "n1", "n2", "fw", "n2", "n3", "gw"]
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 3).returncode == 0
    assert tcp_connects(nsc_ns, gw_ns, target, 8080)
    assert not tcp_connects(nsc_ns, gw_ns, target, 80)
    assert ": nsm" not in sh("ip", "-o", "link", netns=n2).stdout  # no device on n2
    (middle,) = d2.cli_json("get", "connections")
    metrics = middle["path"]["path_segments"][3]["metrics"]
    assert int(metrics["firewall.rule1_packets"]) >= 1
    d1.cli("close", conn["id"])
    wait_until(lambda: d2.cli_json("get", "connections") == [] and
               d3.cli_json("get", "connections") == [])
    assert "nsm" not in sh("ip", "-o", "link", netns=gw_ns).stdout


def nse(name: str, labels: str, nsmd: str) -> str:
    return f"""
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {{name: {name}}}
spec:
  network_service_names: [nse-composition]
  network_service_labels: {{nse-composition: {{labels: {{{labels}}}}}}}
  nsmd: {nsmd}
"""


def test_nsms_composition_example_over_three_hosts(netns, daemon, tmp_path):
    """NSM's nse-composition service, unchanged (ETHERNET, firewall -> passthrough-1 -> 2
    -> 3 -> gateway), NSM's ACL config file for the firewall; five endpoints on three
    hosts: the client and the firewall on n1, passthroughs 1 and 2 on n2 (a relay), the
    third and the gateway on n3."""
    from pathlib import Path

    data = Path(__file__).parent.parent / "data" / "nsm"
    (d1, d2, d3), nodes = build_hosts(netns, daemon, tmp_path, ["n1", "n2", "n3"],
                                      {"NSMD_KEEPALIVE_S": "0.5"})
    n2 = list(nodes)[1]
    gw_ns, nsc_ns = netns("gw"), netns("nsc")
    acl = data / "nse-composition-firewall-config.yaml"
    d1.cli("apply", "-f", str(data / "nse-composition-netsvc.yaml"))
    d1.cli("apply", "-f", "-", stdin=nse("nse-firewall-vpp", "app: firewall",
                                         "{next: {}, functions: [{name: firewall, config: "
                                         f"{{nsm_acl_file: {acl}}}}}]}}"))
    d2.cli("apply", "-f", "-", stdin="---".join(
        nse(f"nse-passthrough-vpp-{i}", f"app: passthrough-{i}", "{next: {}}") for i in (1, 2)))
    d3.cli("apply", "-f", "-", stdin=nse("nse-passthrough-vpp-3", "app: passthrough-3",
                                         "{next: {}}") + "---" +
           nse("nse-kernel", "app: gateway", f"{{netns: {gw_ns}, ipam: "
                                            "{prefix: 172.16.1.100/30}}"))
    wait_until(lambda: len(d1.cli_json("get", "endpoints")) == 5)
    conn = d1.cli_json("connect", "nse-composition", "--netns", nsc_ns)
    names = [s["name"] for s in conn["path"]["path_segments"]]
    assert [n for n in names if n.startswith("nse-")] == [
        "nse-firewall-vpp", "nse-passthrough-vpp-1", "nse-passthrough-vpp-2",
        "nse-passthrough-vpp-3", "nse-kernel"]
    assert names[1] == "n1" and "n2" in names and names[-2] == "n3"
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert target.startswith("172.16.1.")
    assert ping(nsc_ns, target, 3).returncode == 0                     # allow icmp
    assert tcp_connects(nsc_ns, gw_ns, target, 8080)                   # allow tcp8080
    assert not tcp_connects(nsc_ns, gw_ns, target, 80)                 # forbid tcp80
    assert not tcp_connects(nsc_ns, gw_ns, target, 5001)               # no rule: deny
    metrics = next(s for s in d1.cli_json("get", "connections")[0]["path"]["path_segments"]
                   if s["name"] == "nse-firewall-vpp")["metrics"]
    assert int(metrics["firewall.rule2_packets"]) >= 1
    assert int(metrics["firewall.default_packets"]) >= 1
    assert ": nsm" not in sh("ip", "-o", "link", netns=n2).stdout
    d1.cli("close", conn["id"])
    wait_until(lambda: all(d.cli_json("get", "connections") == [] for d in (d2, d3)))
