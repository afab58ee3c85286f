"""ETHERNET payloads: TAP devices at both ends of a vWire, a MAC per side, /32 addresses
and routes as for IP, ARP resolved across the vWire, on one host and across hosts."""

from __future__ import annotations

from nsmd.testing.sandbox import endpoint_manifest, host, ping, service_manifest, sh, wait_until
from tests.integration.beds import build_two_hosts


def link_of(netns: str, ifname: str) -> str:
    return sh("ip", "-o", "link", "show", ifname, netns=netns).stdout


def check_l2(conn: dict, client_ns: str, endpoint_ns: str) -> None:
    eth = conn["context"]["ethernet_context"]
    ipc = conn["context"]["ip_context"]
    target = host(ipc["dst_ip_addrs"][0])
    client_if = conn["mechanism"]["parameters"]["name"]
    assert f"link/ether {eth['src_mac']}" in link_of(client_ns, client_if)
    assert "link/ether " + eth["dst_mac"] in sh("ip", "-o", "link", netns=endpoint_ns).stdout
    assert ping(client_ns, target, 3).returncode == 0
    neigh = sh("ip", "neigh", "show", target, netns=client_ns).stdout
    assert eth["dst_mac"] in neigh, neigh           # resolved by ARP over the vWire


def test_an_ethernet_vwire_on_one_host(netns, daemon):
    d = daemon("n1")
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    d.cli("apply", "-f", "-", stdin=service_manifest("l2", payload="ETHERNET") + "---" +
          endpoint_manifest("e1", "l2", nse_ns, "169.254.70.0/24"))
    conn = d.cli_json("connect", "l2", "--netns", nsc_ns)
    assert conn["payload"] == "ETHERNET"
    check_l2(conn, nsc_ns, nse_ns)
    d.cli("close", conn["id"])
    assert ": nsm" not in sh("ip", "-o", "link", netns=nse_ns).stdout


def test_an_ethernet_vwire_across_hosts(netns, daemon, tmp_path):
    near, far, _, nsc_ns, _ = build_two_hosts(netns, daemon, tmp_path,
                                              {"NSMD_KEEPALIVE_S": "0.5"}, service="unused")
    nse_ns = netns("l2nse")
    far.cli("apply", "-f", "-", stdin=service_manifest("l2", payload="ETHERNET") + "---" +
            endpoint_manifest("e2", "l2", nse_ns, "169.254.71.0/24"))
    wait_until(lambda: any(e["name"] == "e2" for e in near.cli_json("get", "endpoints")))
    conn = near.cli_json("connect", "l2", "--netns", nsc_ns)
    check_l2(conn, nsc_ns, nse_ns)
    assert conn["context"]["MTU"] == 1420 - 14   # frames fit the tunnel whole
    near.cli("close", conn["id"])
    wait_until(lambda: far.cli_json("get", "connections") == [])
