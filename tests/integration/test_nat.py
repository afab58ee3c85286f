"""Hosts behind NAT (nftables routers in namespaces, nsmd/testing/nat.py): a client's daemon
behind a masquerading router gets its cross-host vWire with no option, the endpoint's
daemon aiming the tunnel at the address the client's TLS connection came from and
following the client's authenticated datagrams to wherever the NAT maps them."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from nsmd.testing.nat import nat_bed
from nsmd.testing.sandbox import (
    Pinger,
    endpoint_manifest,
    host,
    ping,
    ping_report,
    service_manifest,
    sh,
    tcp_transfer,
    trust_domain,
    wait_until,
)

TD = "nat.nsmd"
PUB, HOME = f"spiffe://{TD}/node/pub", f"spiffe://{TD}/node/home"


@pytest.mark.parametrize("mode", ["masquerade", "random"])
def test_a_client_behind_a_nat_reaches_a_public_endpoint(netns, daemon, tmp_path, mode):
    hosts = nat_bed(netns, public=["pub"], behind=["home"], mode=mode)
    pub, home = hosts["pub"], hosts["home"]
    ids = trust_domain(str(tmp_path), TD, [PUB, HOME])
    env = {"NSMD_KEEPALIVE_S": "0.5"}
    d_pub = daemon("pub", pub.ns, ("--listen", f"{pub.ip}:7000", "--identity-dir", ids[PUB]),
                   env)
    d_home = daemon("home", home.ns, ("--listen", f"{home.ip}:7000", "--registry",
                                      f"https://{pub.ip}:7000", "--registry-id", PUB,
                                      "--identity-dir", ids[HOME]), env)
    nse, client = netns("nse"), netns("client")
    d_pub.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
              endpoint_manifest("e1", "svc", nse, "100.64.70.0/24"))
    wait_until(lambda: any(e["name"] == "e1" for e in d_home.cli_json("get", "endpoints")))
    conn = d_home.cli_json("connect", "svc", "--netns", client)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(client, target, 3).returncode == 0
    assert tcp_transfer(nse, client, target, 1 << 20)
    # the endpoint's side aimed the tunnel at the NAT's public address, not the private one
    (served,) = d_pub.cli_json("get", "connections")
    assert served["mechanism"]["parameters"]["src_ip"] == home.public_ip
    # ... and its datagrams follow the client's to the port the NAT maps (a random one:
    # roaming moved them there)
    metrics = served["path"]["path_segments"][-1]["metrics"]
    assert metrics["tunnel_peer"].startswith(f"{home.public_ip}:"), metrics
    assert mode != "random" or int(metrics["tunnel_roams"]) >= 1, metrics
    d_home.cli("close", conn["id"])
    wait_until(lambda: d_pub.cli_json("get", "connections") == [])


def test_an_endpoint_behind_a_port_forward_is_reached_at_its_advertised_address(
        netns, daemon, tmp_path):
    """--advertise: the endpoint's host sits behind a NAT that forwards its peer port and
    tunnel ports; it registers, answers and keys tunnels under the router's address."""
    hosts = nat_bed(netns, public=["pub"], behind=["office"], forward=True)
    pub, office = hosts["pub"], hosts["office"]
    ids = trust_domain(str(tmp_path), TD, [PUB, HOME])
    env = {"NSMD_KEEPALIVE_S": "0.5"}
    d_pub = daemon("pub", pub.ns, ("--listen", f"{pub.ip}:7000", "--identity-dir", ids[PUB]),
                   env)
    d_office = daemon("office", office.ns, (
        "--listen", f"{office.ip}:7000", "--advertise", office.public_ip, "--registry",
        f"https://{pub.ip}:7000", "--registry-id", PUB, "--identity-dir", ids[HOME]), env)
    nse, client = netns("nse"), netns("client")
    d_office.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
                 endpoint_manifest("e1", "svc", nse, "100.64.71.0/24"))
    wait_until(lambda: any(e["name"] == "e1" for e in d_pub.cli_json("get", "endpoints")))
    (record,) = [e for e in d_pub.cli_json("get", "endpoints") if e["name"] == "e1"]
    assert record["url"] == f"https://{office.public_ip}:7000"
    conn = d_pub.cli_json("connect", "svc", "--netns", client)
    assert conn["mechanism"]["parameters"]["remote"] == f"https://{office.public_ip}:7000"
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(client, target, 3).returncode == 0
    assert tcp_transfer(nse, client, target, 1 << 20)
    d_pub.cli("close", conn["id"])


def test_a_nat_mapping_lost_mid_stream_is_followed_at_once(netns, daemon, tmp_path):
    """The client's router forgets its mappings (conntrack flushed) while packets flow: the
    client's next datagram leaves from a new port, the endpoint's host roams there, and the
    vWire goes on with the same addresses, losing at most a packet or two."""
    hosts = nat_bed(netns, public=["pub"], behind=["home"], mode="random")
    pub, home = hosts["pub"], hosts["home"]
    ids = trust_domain(str(tmp_path), TD, [PUB, HOME])
    env = {"NSMD_KEEPALIVE_S": "0.5"}
    d_pub = daemon("pub", pub.ns, ("--listen", f"{pub.ip}:7000", "--identity-dir", ids[PUB]),
                   env)
    d_home = daemon("home", home.ns, ("--listen", f"{home.ip}:7000", "--registry",
                                      f"https://{pub.ip}:7000", "--registry-id", PUB,
                                      "--identity-dir", ids[HOME]), env)
    nse, client = netns("nse"), netns("client")
    d_pub.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
              endpoint_manifest("e1", "svc", nse, "100.64.72.0/24"))
    wait_until(lambda: any(e["name"] == "e1" for e in d_home.cli_json("get", "endpoints")))
    conn = d_home.cli_json("connect", "svc", "--netns", client)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(client, target, 2).returncode == 0

    def roams() -> int:
        (served,) = d_pub.cli_json("get", "connections")
        return int(served["path"]["path_segments"][-1]["metrics"]["tunnel_roams"])

    before = roams()
    pinger = subprocess.Popen(["ip", "netns", "exec", client, "ping", "-c", "300", "-i",
                               "0.02", "-W", "1", target], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        sh("conntrack", "-F", netns=home.router)
    finally:
        out = pinger.communicate(timeout=60)[0]
    lost = 300 - int(out.split(" received")[0].rsplit(",", 1)[-1])
    assert lost <= 3, ping_report(out)
    assert roams() > before
    (again,) = d_home.cli_json("get", "connections")
    assert again["id"] == conn["id"] and again["context"]["ip_context"] == \
        conn["context"]["ip_context"]


OFFICE, RELAY = f"spiffe://{TD}/node/office", f"spiffe://{TD}/node/relay"
MARKER = b"plaintext the relay must never see"


def both_behind(netns, daemon, tmp_path, mode: str, prefix: str, relay: bool = False):
    """The registry on a public host (and a --relay on another, if `relay`); the
    endpoint's host and the client's behind a NAT each, neither reachable from outside:
    (hosts, registry's, endpoint's and client's daemons, endpoint ns, client ns)."""
    hosts = nat_bed(netns, public=["pub", "relay"] if relay else ["pub"],
                    behind=["home", "office"], mode=mode)
    pub = hosts["pub"]
    ids = trust_domain(str(tmp_path), TD, [PUB, HOME, OFFICE, RELAY])
    env = {"NSMD_KEEPALIVE_S": "0.5"}
    d_pub = daemon("pub", pub.ns, ("--listen", f"{pub.ip}:7000", "--identity-dir", ids[PUB]),
                   env)
    if relay:
        daemon("relay", hosts["relay"].ns, (
            "--listen", f"{hosts['relay'].ip}:7000", "--relay", "--registry",
            f"https://{pub.ip}:7000", "--registry-id", PUB, "--identity-dir", ids[RELAY]), env)
    behind = [daemon(tag, hosts[tag].ns, (
        "--listen", f"{hosts[tag].ip}:7000", "--registry", f"https://{pub.ip}:7000",
        "--registry-id", PUB, "--identity-dir", ids[sid]), env)
        for tag, sid in (("home", HOME), ("office", OFFICE))]
    nse, client = netns("nse"), netns("client")
    behind[0].cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
                  endpoint_manifest("e1", "svc", nse, prefix))
    wait_until(lambda: any(e["name"] == "e1" for e in behind[1].cli_json("get", "endpoints")))
    return hosts, d_pub, behind[0], behind[1], nse, client


def test_both_behind_nat_meet_through_the_rendezvous_and_punch_a_direct_path(
        netns, daemon, tmp_path):
    """Neither host can be reached: the Request goes sealed through the registry daemon's
    rendezvous, the endpoint's host answering over the channel it holds open; each aims
    its tunnel at the other's NAT as the rendezvous saw it, and their keepalives punch
    the path: packets then flow directly, never through the registry's host."""
    hosts, d_pub, d_home, d_office, nse, client = both_behind(netns, daemon, tmp_path,
                                                              "masquerade", "100.64.73.0/24")
    conn = d_office.cli_json("connect", "svc", "--netns", client)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    wait_until(lambda: ping(client, target, 1).returncode == 0, timeout=10)
    assert tcp_transfer(nse, client, target, 1 << 20)
    (mine,) = d_office.cli_json("get", "peers")
    (theirs,) = d_home.cli_json("get", "peers")
    assert (mine["peer"], theirs["peer"]) == (HOME, OFFICE)
    assert mine["address"].startswith(hosts["home"].public_ip + ":"), mine
    assert theirs["address"].startswith(hosts["office"].public_ip + ":"), theirs
    assert mine["rx_bytes"] > 1 << 20 or theirs["rx_bytes"] > 1 << 20
    assert d_pub.cli_json("status")["dataplane"]["rx_packets"] == 0  # nothing relayed there
    assert "through the rendezvous" in d_office.log()
    d_office.cli("close", conn["id"])   # the close goes the same way
    wait_until(lambda: d_home.cli_json("get", "connections") == [])


def test_the_registry_host_reaches_an_endpoint_behind_nat_over_its_channel(
        netns, daemon, tmp_path):
    """A public client on the registry's own host: its call goes straight into the channel
    the endpoint's host holds (no --advertise, no port forward), and the endpoint's
    keepalives open the way back through its NAT."""
    hosts, d_pub, d_home, _, nse, _ = both_behind(netns, daemon, tmp_path, "random",
                                                  "100.64.74.0/24")
    client = netns("client2")
    conn = d_pub.cli_json("connect", "svc", "--netns", client)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    wait_until(lambda: ping(client, target, 1).returncode == 0, timeout=10)
    assert tcp_transfer(nse, client, target, 1 << 20)
    (peer,) = d_pub.cli_json("get", "peers")
    assert peer["peer"] == HOME and peer["address"].startswith(hosts["home"].public_ip + ":")
    d_pub.cli("close", conn["id"])
    wait_until(lambda: d_home.cli_json("get", "connections") == [])


def path_of(d) -> str:
    (conn,) = d.cli_json("get", "connections")
    return conn["path"]["path_segments"][-1]["metrics"].get("tunnel_path", "")


def test_both_behind_port_changing_nats_go_through_a_relay_that_cannot_read_them(
        netns, daemon, tmp_path):
    """NATs that change ports: no hole opens. After 2 s the client's daemon takes two
    ports at the --relay (found in the registry), tells the endpoint's host to send to its
    own, and the relay passes sealed datagrams it cannot open: the marker sent through
    the vWire never appears in what the relay's host sees."""
    hosts, _, d_home, d_office, nse, client = both_behind(
        netns, daemon, tmp_path, "random", "100.64.75.0/24", relay=True)
    conn = d_office.cli_json("connect", "svc", "--netns", client)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    wait_until(lambda: ping(client, target, 1).returncode == 0, timeout=15)
    assert path_of(d_office) == f"relayed via {RELAY}"
    pcap = tmp_path / "relay.pcap"
    capture = subprocess.Popen(["ip", "netns", "exec", hosts["relay"].ns, "tcpdump", "-i",
                                "eth0", "-U", "--immediate-mode", "-w", str(pcap), "-s", "0",
                                "udp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        sh(sys.executable, "-c",
           "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
           f"[s.sendto({MARKER!r}*10,('{target}',9)) for _ in range(20)]", netns=client)
        assert tcp_transfer(nse, client, target, 1 << 20)
        time.sleep(0.5)
    finally:
        capture.terminate()
        capture.wait(timeout=10)
    raw = pcap.read_bytes()
    assert len(raw) > 1 << 20, "the relay's host saw too little: the vWire went elsewhere"
    assert MARKER not in raw
    (served,) = d_home.cli_json("get", "connections")
    metrics = served["path"]["path_segments"][-1]["metrics"]
    assert metrics["tunnel_path"] == f"relayed via {RELAY}"
    assert metrics["tunnel_peer"].startswith(hosts["relay"].ip + ":")


def test_a_relayed_vwire_moves_to_the_direct_path_once_it_opens_losing_nothing(
        netns, daemon, tmp_path):
    """Port-keeping NATs, but the direct path is blocked at first (a firewall rule on the
    endpoint's router): the vWire is relayed. Lifting the block, the ends' probes get
    through and the tunnel moves to the direct path, while pings flow without a loss;
    the relay's ports are then given back."""
    hosts, _, d_home, d_office, _, client = both_behind(
        netns, daemon, tmp_path, "masquerade", "100.64.76.0/24", relay=True)
    router, office_public = hosts["home"].router, hosts["office"].public_ip
    for rule in ("add table inet block",   # a table of its own: lifted in one step
                 "add chain inet block through { type filter hook forward priority -10 ; }",
                 f"add rule inet block through ip saddr {office_public} udp dport 51820 drop",
                 f"add rule inet block through ip daddr {office_public} udp dport 51820 drop"):
        sh("nft", *rule.split(), netns=router)
    conn = d_office.cli_json("connect", "svc", "--netns", client)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    wait_until(lambda: ping(client, target, 1).returncode == 0, timeout=15)
    assert path_of(d_office) == f"relayed via {RELAY}"
    pinger = Pinger(client, target, interval=0.05, seconds=30)
    try:
        time.sleep(1)
        sh("nft", "delete", "table", "inet", "block", netns=router)
        wait_until(lambda: path_of(d_office) == "direct (punched)", timeout=15)
        time.sleep(1)
    finally:
        pinger.stop()
    assert pinger.sent >= 40 and pinger.lost == 0, (pinger.sent, pinger.lost)
    (served,) = d_home.cli_json("get", "connections")
    metrics = served["path"]["path_segments"][-1]["metrics"]
    assert metrics["tunnel_peer"].startswith(office_public + ":"), metrics
    assert "relay" in d_office.log() and "given back" in d_office.log()
