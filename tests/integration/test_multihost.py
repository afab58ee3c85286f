"""Two or three hosts made of network namespaces on a bridge (underlay 192.0.2.0/24), one
daemon per host, vWires across them through the encrypted UDP tunnel."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import time

import pytest

from nsmd.testing.sandbox import (
    endpoint_manifest,
    host,
    ping,
    ping_report,
    service_manifest,
    sh,
    tcp_transfer,
    trust_domain,
    underlay,
    wait_until,
)
from nsmd.tunnel_keys import parse_aeads
from tests.integration.beds import (
    DOMAIN,
    build_hosts,
    build_two_hosts,
    connect,
    peer_port_blocked,
)

MARKER = b"nsmd-plaintext-marker-7c1f"


@pytest.fixture
def two_hosts(netns, daemon, tmp_path):
    return build_two_hosts(netns, daemon, tmp_path,
                           {"NSMD_KEEPALIVE_S": "0.5", "NSMD_ENGINES": "2"})


def metric(d, name: str, labels: str = "") -> float:
    text = d.client.call("GET", "/metrics")
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_cross_host_ping_and_tcp(two_hosts):
    near, far, nse_ns, nsc_ns, _ = two_hosts
    conn = near.cli_json("connect", "remote-svc", "--netns", nsc_ns)
    assert conn["network_service_endpoint_name"] == "far-1"
    assert [s["name"] for s in conn["path"]["path_segments"]] == [
        f"nsc@{nsc_ns}", "n1", "n2", "far-1"]
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert conn["context"]["MTU"] == 1420
    result = ping(nsc_ns, target, 3)
    assert result.returncode == 0, result.stdout + near.log()
    assert tcp_transfer(nse_ns, nsc_ns, target, 8 << 20)
    # the far side sees the vWire too, and closing it removes both ends
    (far_conn,) = far.cli_json("get", "connections")
    assert far_conn["path"]["path_segments"][0]["id"] == conn["id"]
    # both daemons on "auto": this machine's CPU decides the AEAD
    assert far_conn["mechanism"]["parameters"]["aead"] == parse_aeads("auto", "")[0]
    # both ends' TUN devices have offloads: each took the other's partial TCP checksums
    # (the 8 MiB above crossed with them)
    assert far_conn["mechanism"]["parameters"]["tcp_csum"] == "partial"
    near.cli("close", conn["id"])
    wait_until(lambda: far.cli_json("get", "connections") == [])
    assert "nsm0" not in sh("ip", "-o", "link", netns=nse_ns).stdout
    assert "nsm0" not in sh("ip", "-o", "link", netns=nsc_ns).stdout


def test_daemons_set_to_chacha20_poly1305_agree_on_it(netns, daemon, tmp_path):
    near, far, nse_ns, nsc_ns, _ = build_two_hosts(
        netns, daemon, tmp_path, {"NSMD_TUNNEL_AEAD": "chacha20-poly1305"})
    conn, target = connect(near, "remote-svc", nsc_ns)
    (far_conn,) = far.cli_json("get", "connections")
    assert far_conn["mechanism"]["parameters"]["aead"] == "chacha20-poly1305"
    assert ping(nsc_ns, target, 3).returncode == 0, near.log()
    assert tcp_transfer(nse_ns, nsc_ns, target, 4 << 20)


def test_the_underlay_carries_only_tunnel_and_tls(two_hosts):
    near, far, nse_ns, nsc_ns, nodes = two_hosts
    n1, n2 = list(nodes)
    conn = near.cli_json("connect", "remote-svc", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    # --immediate-mode: libpcap's ring would otherwise hold packets of the last second
    capture = subprocess.Popen(["ip", "netns", "exec", n2, "tcpdump", "-i", "eth0", "-U",
                                "--immediate-mode", "-w", "-", "-s", "0", "not arp"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        sh(sys.executable, "-c",
           f"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
           f"[s.sendto({MARKER!r}*10,('{target}',9)) for _ in range(20)]", netns=nsc_ns)
        assert ping(nsc_ns, target, 2).returncode == 0
        near.cli("close", conn["id"])  # some TLS between the daemons too
        time.sleep(0.5)
    finally:
        capture.terminate()
        raw = capture.communicate(timeout=10)[0]
    packets = list(_pcap_packets(raw))
    assert packets, "nothing captured"
    kinds = {_kind(p) for p in packets}
    tunnel = {f"udp:{port}" for port in range(51820, 51830)}
    assert kinds <= tunnel | {"tcp:7000"}, kinds
    assert kinds & tunnel and "tcp:7000" in kinds
    assert MARKER not in raw


def _pcap_packets(raw: bytes):
    """Ethernet frames of a pcap stream (tcpdump -w -)."""
    pos = 24
    while pos + 16 <= len(raw):
        incl = struct.unpack("<I", raw[pos + 8:pos + 12])[0]
        yield raw[pos + 16:pos + 16 + incl]
        pos += 16 + incl


def _kind(frame: bytes) -> str:
    if frame[12:14] != b"\x08\x00":
        return f"ethertype:{frame[12:14].hex()}"
    ip = frame[14:]
    proto, ihl = ip[9], (ip[0] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    name = {6: "tcp", 17: "udp"}.get(proto, f"proto{proto}")
    known = ({7000} | set(range(51820, 51830))) & {sport, dport}
    return f"{name}:{known.pop() if known else min(sport, dport)}"


def test_replayed_and_tampered_datagrams_are_dropped_and_counted(two_hosts):
    near, far, nse_ns, nsc_ns, nodes = two_hosts
    n1, n2 = list(nodes)
    ip2 = nodes[n2]
    conn = near.cli_json("connect", "remote-svc", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    capture = subprocess.Popen(["ip", "netns", "exec", n2, "tcpdump", "-i", "eth0", "-U",
                                "-c", "3", "-w", "-", "-s", "0", "udp dst portrange 51820-51829 "
                                "and greater 100"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    ping(nsc_ns, target, 3)
    raw = capture.communicate(timeout=10)[0]
    frame = next(_pcap_packets(raw))
    ihl = (frame[14] & 0x0F) * 4
    port = struct.unpack("!H", frame[14 + ihl + 2:14 + ihl + 4])[0]  # the wire's engine
    datagram = frame[14 + ihl + 8:]
    before_replay = metric(far, "nsmd_drops_total", '{reason="replay"}')
    before_tag = metric(far, "nsmd_drops_total", '{reason="bad_tag"}')
    # a forged counter ahead of the window passes the replay check, then fails the tag
    # (the same counter would already be stopped as a replay, before any crypto)
    tampered = bytearray(datagram)
    counter = int.from_bytes(datagram[8:16], "little")
    tampered[8:16] = (counter + 1000).to_bytes(8, "little")
    tampered[-20] ^= 0x40
    sender = (f"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
              f"s.sendto(bytes.fromhex('{datagram.hex()}'),('{ip2}',{port}));"
              f"s.sendto(bytes.fromhex('{bytes(tampered).hex()}'),('{ip2}',{port}))")
    sh(sys.executable, "-c", sender, netns=n1)
    wait_until(lambda: metric(far, "nsmd_drops_total", '{reason="replay"}') == before_replay + 1)
    wait_until(lambda: metric(far, "nsmd_drops_total", '{reason="bad_tag"}') == before_tag + 1)
    assert ping(nsc_ns, target, 2).returncode == 0  # and the vWire is unharmed


def test_rekeying_during_traffic_loses_nothing(netns, daemon, tmp_path):
    near, far, nse_ns, nsc_ns, _ = build_two_hosts(
        netns, daemon, tmp_path, {"NSMD_REKEY_AFTER_S": "1", "NSMD_KEEPALIVE_S": "0.5"})
    conn, target = connect(near, "remote-svc", nsc_ns)
    result = sh("ping", "-c", "400", "-i", "0.01", "-W", "1", target, netns=nsc_ns,
                check=False, timeout=60)
    assert " 0% packet loss" in result.stdout, ping_report(result.stdout)
    assert metric(near, "nsmd_tunnel_rekeys_total") >= 3
    for d in (near, far):
        for reason in ("bad_tag", "replay", "no_key"):
            assert metric(d, "nsmd_drops_total", f'{{reason="{reason}"}}') == 0, (d.name, reason)


def test_a_daemon_from_another_ca_is_refused(two_hosts, daemon, netns, tmp_path):
    near, far, nse_ns, nsc_ns, nodes = two_hosts
    registry_ip = nodes[list(nodes)[0]]
    # same trust domain name, different CA: an impostor
    impostor_ids = trust_domain(str(tmp_path / "evil"), DOMAIN, [f"spiffe://{DOMAIN}/node/n3"])
    n3 = netns("n3")
    sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p3", netns=n3)
    bridge = [n for n in nodes][0].rsplit("-", 1)[0] + "-br"
    sh("ip", "link", "set", "p3", "netns", bridge, netns=n3)
    sh("ip", "link", "set", "p3", "master", "br0", "up", netns=bridge)
    sh("ip", "addr", "add", "192.0.2.3/24", "dev", "eth0", netns=n3)
    sh("ip", "link", "set", "eth0", "up", netns=n3)
    evil = daemon("n3", n3, ("--listen", "192.0.2.3:7000", "--registry",
                             f"https://{registry_ip}:7000", "--identity-dir",
                             impostor_ids[f"spiffe://{DOMAIN}/node/n3"]))
    evil_ns = netns("evil-nse")
    result = evil.cli("apply", "-f", "-", check=False, stdin=endpoint_manifest(
        "evil-1", "remote-svc", evil_ns, "100.64.70.0/24"))
    assert result.returncode == 1 and "192.0.2.1:7000" in result.stderr
    assert [e["name"] for e in near.cli_json("get", "endpoints")] == ["far-1"]
    assert "certificate" in evil.log().lower()


def test_svid_rotation_drops_no_vwire(netns, daemon, tmp_path):
    from nsmd.identity.ca import init_ca
    from nsmd.testing.workload_api import WorkloadApiServer

    nodes = underlay(netns, ["n1", "n2"])
    (n1, ip1), (n2, ip2) = nodes.items()
    ca = str(tmp_path / "ca")
    init_ca(ca, DOMAIN)
    apis = [WorkloadApiServer(ca, f"spiffe://{DOMAIN}/node/{n}", str(tmp_path / f"{n}.sock"),
                              str(tmp_path)).start() for n in ("a", "b")]
    try:
        near = daemon("n1", n1, ("--listen", f"{ip1}:7000", "--spiffe-socket", apis[0].url))
        far = daemon("n2", n2, ("--listen", f"{ip2}:7000", "--registry", f"https://{ip1}:7000",
                                "--spiffe-socket", apis[1].url))
        nse_ns, nsc_ns = netns("nse"), netns("nsc")
        far.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
                endpoint_manifest("e", "svc", nse_ns, "100.64.61.0/24"))
        wait_until(lambda: near.cli_json("get", "endpoints"))
        conn = near.cli_json("connect", "svc", "--netns", nsc_ns)
        target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
        serials = [d.cli_json("status")["identity"]["serial"] for d in (near, far)]
        pinger = subprocess.Popen(["ip", "netns", "exec", nsc_ns, "ping", "-c", "300", "-i",
                                   "0.01", "-W", "1", target], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        for api in apis:
            api.rotate()
        out = pinger.communicate(timeout=60)[0]
        assert " 0% packet loss" in out, ping_report(out)
        for d, old in zip((near, far), serials, strict=True):
            wait_until(lambda d=d, old=old: d.cli_json("status")["identity"]["serial"] != old)
        # the control plane keeps working with the new certificates: close crosses hosts
        near.cli("close", conn["id"])
        wait_until(lambda: far.cli_json("get", "connections") == [])
    finally:
        for api in apis:
            api.stop()


def test_a_restarted_endpoint_host_heals_without_leaks(two_hosts):
    near, far, nse_ns, nsc_ns, _ = two_hosts
    conn = near.cli_json("connect", "remote-svc", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 2).returncode == 0
    far.stop()
    far.start()
    # the client's daemon hears nothing on the tunnel, reselects, and traffic flows again
    wait_until(lambda: ping(nsc_ns, host(near.cli_json("get", "connections")[0]["context"][
        "ip_context"]["dst_ip_addrs"][0]), 1).returncode == 0, timeout=30, interval=0.5)
    (now,) = near.cli_json("get", "connections")
    assert now["id"] == conn["id"] and now["state"] == "UP"
    # the endpoint's host kept nothing from before the restart
    assert len(far.cli_json("get", "connections")) == 1
    links = sh("ip", "-o", "link", netns=nse_ns).stdout
    assert links.count("nsm") == 1, links


def test_vwires_spread_over_the_engines(two_hosts, netns):
    near, far, nse_ns, nsc_ns, _ = two_hosts
    other_ns = netns("nsc2")
    conns = [near.cli_json("connect", "remote-svc", "--netns", ns) for ns in (nsc_ns, other_ns)]
    ports = {c["mechanism"]["parameters"]["dst_port"] for c in far.cli_json("get", "connections")}
    assert len(ports) == 2  # one tunnel socket (and thread) per engine
    for conn, ns in zip(conns, (nsc_ns, other_ns), strict=True):
        assert ping(ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]), 2).returncode == 0


def test_a_refresh_after_the_far_daemon_restarted_rekeys_in_place(netns, daemon, tmp_path):
    # refresh every 1.2 s; a silent tunnel only counts as dead after 30 s. The far
    # daemon's restart notice cannot reach the client's host (whose peer port refuses
    # it), so it is the next refresh that finds the far side without keys and re-keys
    # the same vWire. The registry is on a third host, which the far daemon still reaches.
    (_, near, far), nodes = build_hosts(
        netns, daemon, tmp_path, ["n1", "n2", "n3"],
        {"NSMD_TOKEN_LIFETIME_S": "6", "NSMD_KEEPALIVE_S": "5", "NSMD_HEAL_DETECT_S": "40"})
    near_node, far_ip = [(ns, nodes[f]) for ns in nodes if ns.endswith("-n2")
                         for f in nodes if f.endswith("-n3")][0]
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    far.cli("apply", "-f", "-", stdin=service_manifest("remote-svc") + "---" +
            endpoint_manifest("far-1", "remote-svc", nse_ns, "100.64.50.0/24"))
    wait_until(lambda: any(e["name"] == "far-1" for e in near.cli_json("get", "endpoints")))
    conn, target = connect(near, "remote-svc", nsc_ns)
    assert ping(nsc_ns, target, 1).returncode == 0
    with peer_port_blocked(near_node, source=far_ip):
        far.stop()
        far.start()
        started = time.monotonic()
        wait_until(lambda: ping(nsc_ns, target, 1).returncode == 0, timeout=15, interval=0.3)
        assert time.monotonic() - started < 10  # the refresh did it, not the 30 s liveness
    assert "making a fresh offer" in near.log()
    assert "by reselect" not in near.log()
    assert near.cli_json("get", "connections")[0]["id"] == conn["id"]
