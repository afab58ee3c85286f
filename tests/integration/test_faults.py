"""Fault injection in namespaces: an endpoint dying under traffic, an endpoint's host cut
off, each daemon killed -9 and restarted, a lossy and slow underlay, the registry's host
down, the control plane blocked while the data plane lives.

Each test measures what it went through (beds.report: printed, and collected by
bench/faults.py) and ends with a leak check of every daemon involved. Traffic is a ping
every 100 ms from the client's namespace; "outage" is the longest time without a reply.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from nsmd.testing.sandbox import (
    Pinger,
    endpoint_manifest,
    ping,
    routed_underlay,
    service_manifest,
    sh,
    tcp_transfer,
    wait_until,
)
from tests.integration.beds import (
    assert_no_leaks,
    build_hosts,
    build_two_hosts,
    connect,
    logged_at,
    peer_port_blocked,
    report,
)

PREFIX = "100.64.50.0/24"


def ip_context(conn: dict) -> tuple[list[str], list[str]]:
    ipc = conn["context"]["ip_context"]
    return ipc["src_ip_addrs"], ipc["dst_ip_addrs"]


def the_connection(d) -> dict:
    (conn,) = d.cli_json("get", "connections")
    return conn


def links(netns: str) -> list[str]:
    return [line.split(":")[1].strip().split("@")[0] for line in sh(
        "ip", "-o", "link", netns=netns).stdout.splitlines() if ": nsm" in line]


def test_an_endpoint_killed_under_traffic_is_replaced(netns, daemon, tmp_path):
    near, far, nse_ns, nsc_ns, _ = build_two_hosts(netns, daemon, tmp_path, {})
    spare_ns = netns("nse2")  # same prefix: the client's addresses can come along
    far.cli("apply", "-f", "-", stdin=endpoint_manifest("far-2", "remote-svc", spare_ns,
                                                         PREFIX))
    wait_until(lambda: len(near.cli_json("get", "endpoints")) == 2)
    conn, target = connect(near, "remote-svc", nsc_ns)
    first = conn["network_service_endpoint_name"]
    victim = nse_ns if first == "far-1" else spare_ns
    pinger = Pinger(nsc_ns, target)
    time.sleep(1)
    killed = time.time()
    sh("ip", "netns", "delete", victim)
    wait_until(lambda: (c := the_connection(near))["network_service_endpoint_name"] != first
               and c["state"] == "UP", timeout=10)
    time.sleep(1)
    pinger.stop()
    detected = logged_at(far, "namespace .* is gone; closing", killed)
    healed = logged_at(near, "healed .* by reselect", killed)
    assert detected is not None and healed is not None, near.log()
    now = the_connection(near)
    assert now["id"] == conn["id"] and ip_context(now) == ip_context(conn)
    assert pinger.first_reply_after(healed) is not None  # the same target answers again
    report("endpoint killed under traffic", detect_s=round(detected - killed, 2),
           heal_s=round(healed - detected, 2), outage_s=round(pinger.longest_gap(), 2),
           pings_lost=pinger.lost)
    assert detected - killed <= 3.0 and healed - detected <= 1.0
    assert_no_leaks(near, wires=1)
    assert_no_leaks(far, wires=1, leases=1)


def test_an_endpoint_host_cut_off_loses_its_clients_to_another(netns, daemon, tmp_path):
    (near, second, third), nodes = build_hosts(netns, daemon, tmp_path, ["n1", "n2", "n3"])
    node_of = {d: ns for d, ns in zip((near, second, third), nodes, strict=True)}
    near.cli("apply", "-f", "-", stdin=service_manifest("remote-svc"))
    for d, tag in ((second, "2"), (third, "3")):  # same prefix: addresses can come along
        d.cli("apply", "-f", "-", stdin=endpoint_manifest(f"far-{tag}", "remote-svc",
                                                           netns(f"nse{tag}"), PREFIX))
    wait_until(lambda: len(near.cli_json("get", "endpoints")) == 2)
    conn, target = connect(near, "remote-svc", netns("nsc"))
    cut, other = (second, third) if conn["network_service_endpoint_name"] == "far-2" \
        else (third, second)
    pinger = Pinger(conn["mechanism"]["parameters"]["netns"], target)
    time.sleep(1)
    cut_at = time.time()
    sh("ip", "link", "set", "eth0", "down", netns=node_of[cut])  # its host is gone
    try:
        wait_until(lambda: the_connection(near)["network_service_endpoint_name"] !=
                   conn["network_service_endpoint_name"] and
                   the_connection(near)["state"] == "UP", timeout=10)
        time.sleep(1)
        pinger.stop()
        detected = logged_at(near, "host silent for .*; healing", cut_at)
        healed = logged_at(near, "healed .* by reselect", cut_at)
        assert detected is not None and healed is not None, near.log()
        now = the_connection(near)
        assert now["id"] == conn["id"] and ip_context(now) == ip_context(conn)
        report("endpoint host cut off", detect_s=round(detected - cut_at, 2),
               heal_s=round(healed - detected, 2), outage_s=round(pinger.longest_gap(), 2),
               pings_lost=pinger.lost)
        assert detected - cut_at <= 3.0 and healed - detected <= 1.0
    finally:
        sh("ip", "link", "set", "eth0", "up", netns=node_of[cut])
    assert_no_leaks(near, wires=1)
    assert_no_leaks(other, wires=1, leases=1)
    # the cut host hears its client fall silent and lets go of its side
    wait_until(lambda: cut.cli_json("status")["leases"] == 0, timeout=10)
    assert_no_leaks(cut, wires=0)


def _restart_killed(d, netns: str, target: str) -> tuple[float, float, Pinger]:
    """Kills `d` with SIGKILL and starts it again while `netns` pings `target`: (when it
    was killed, seconds from the restart to the first answered ping, the pinger)."""
    pinger = Pinger(netns, target)
    time.sleep(0.5)
    killed = time.time()
    d.stop(sig=signal.SIGKILL)
    restarted = time.time()
    d.start()
    wait_until(lambda: ping(netns, target, 1).returncode == 0, timeout=30, interval=0.2)
    time.sleep(0.3)
    pinger.stop()
    back = pinger.first_reply_after(restarted)
    assert back is not None, d.log()
    return killed, back, pinger


def test_the_same_host_daemon_killed_and_restarted(netns, daemon):
    d = daemon("solo")
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    d.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
          endpoint_manifest("nse-1", "svc", nse_ns, PREFIX))
    conn, target = connect(d, "svc", nsc_ns)
    before = links(nsc_ns), links(nse_ns)
    _, back, pinger = _restart_killed(d, nsc_ns, target)
    now = the_connection(d)
    assert now["id"] == conn["id"] and ip_context(now) == ip_context(conn)
    assert (links(nsc_ns), links(nse_ns)) == before
    report("same-host daemon kill -9", restart_to_traffic_s=round(back, 2),
           pings_lost=pinger.lost)
    assert_no_leaks(d, wires=1, leases=1)


def test_the_client_host_daemon_killed_and_restarted(netns, daemon, tmp_path):
    near, far, nse_ns, nsc_ns, _ = build_two_hosts(netns, daemon, tmp_path, {})
    conn, target = connect(near, "remote-svc", nsc_ns)
    before = links(nsc_ns), links(nse_ns)
    _, back, pinger = _restart_killed(near, nsc_ns, target)
    now = the_connection(near)
    assert now["id"] == conn["id"] and ip_context(now) == ip_context(conn)
    assert (links(nsc_ns), links(nse_ns)) == before
    assert "belongs to no connection" not in near.log()
    report("client host daemon kill -9", restart_to_traffic_s=round(back, 2),
           pings_lost=pinger.lost)
    assert_no_leaks(near, wires=1)
    assert_no_leaks(far, wires=1, leases=1)


def test_the_endpoint_host_daemon_killed_and_restarted(netns, daemon, tmp_path):
    near, far, nse_ns, nsc_ns, _ = build_two_hosts(netns, daemon, tmp_path, {})
    conn, target = connect(near, "remote-svc", nsc_ns)
    before = links(nsc_ns), links(nse_ns)
    killed, back, pinger = _restart_killed(far, nsc_ns, target)
    # the restarted far host could not take back its side, and told the near host
    detected = logged_at(near, "dropped its side; healing", killed)
    assert detected is not None, near.log()
    now = the_connection(near)
    assert now["id"] == conn["id"] and ip_context(now) == ip_context(conn)
    assert (links(nsc_ns), links(nse_ns)) == before
    report("endpoint host daemon kill -9", restart_to_traffic_s=round(back, 2),
           detect_s=round(detected - killed, 2),
           pings_lost=pinger.lost)
    assert_no_leaks(near, wires=1)
    assert_no_leaks(far, wires=1, leases=1)


def test_a_vwire_carries_a_transfer_over_a_lossy_slow_underlay(netns, daemon, tmp_path):
    nodes, impairer = routed_underlay(netns, ["n1", "n2"], loss=5, delay_ms=50)
    try:
        near, far, nse_ns, nsc_ns, _ = build_two_hosts(netns, daemon, tmp_path, {},
                                                       nodes=nodes)
        conn, target = connect(near, "remote-svc", nsc_ns)
        started = time.monotonic()
        assert tcp_transfer(nse_ns, nsc_ns, target, 1 << 20)
        took = time.monotonic() - started
    finally:
        counted = impairer.stop()
    now = the_connection(near)
    assert now["id"] == conn["id"] and now["state"] == "UP"
    assert "healing" not in near.log()  # loss and delay are not a dead data plane
    report("5 % loss + 50 ms delay underlay", transfer_1mib_s=round(took, 2),
           impairer=counted.strip())
    assert_no_leaks(near, wires=1)
    assert_no_leaks(far, wires=1, leases=1)


def test_the_registry_host_down_and_back(netns, daemon, tmp_path):
    (registry, far, near), _ = build_hosts(netns, daemon, tmp_path, ["n1", "n2", "n3"])
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    far.cli("apply", "-f", "-", stdin=service_manifest("remote-svc") + "---" +
            endpoint_manifest("far-1", "remote-svc", nse_ns, PREFIX))
    wait_until(lambda: any(e["name"] == "far-1" for e in near.cli_json("get", "endpoints")))
    conn, target = connect(near, "remote-svc", nsc_ns)
    pinger = Pinger(nsc_ns, target)
    time.sleep(0.5)
    down = time.time()
    registry.stop(sig=9)
    time.sleep(3)
    other_ns = netns("nsc2")
    during, _ = connect(near, "remote-svc", other_ns)   # served from the registry's mirror
    registry.start()
    wait_until(lambda: any(e["name"] == "far-1" for e in registry.cli_json("get",
                                                                            "endpoints")))
    back = time.time()
    time.sleep(0.5)
    pinger.stop()
    assert pinger.lost == 0, pinger.replies
    later_ns = netns("nsc3")
    connect(near, "remote-svc", later_ns)
    report("registry host down and back", registry_down_s=round(back - down, 2),
           pings_lost=pinger.lost)
    assert_no_leaks(near, wires=3)
    assert_no_leaks(far, wires=3, leases=3)
    assert during["state"] == "UP"


def test_control_plane_blocked_while_the_data_plane_lives(netns, daemon, tmp_path):
    # refresh every 2 s (10 s tokens); the far host refuses our peer calls for 4 s
    near, far, nse_ns, nsc_ns, nodes = build_two_hosts(
        netns, daemon, tmp_path, {"NSMD_TOKEN_LIFETIME_S": "10"})
    far_node = [ns for ns in nodes if ns.endswith("-n2")][0]
    conn, target = connect(near, "remote-svc", nsc_ns)
    monitor = subprocess.Popen([sys.executable, "-m", "nsmd", "monitor", "-o", "json"],
                               env=dict(os.environ, NSMD_API_SOCKET=near.socket),
                               stdout=subprocess.PIPE, text=True)
    pinger = Pinger(nsc_ns, target)
    time.sleep(0.5)
    blocked = time.time()
    with peer_port_blocked(far_node):
        wait_until(lambda: logged_at(near, "restore failed", blocked) is not None, timeout=6)
        time.sleep(4 - (time.time() - blocked))
    unblocked = time.time()
    wait_until(lambda: logged_at(near, "by restore", unblocked) is not None, timeout=5)
    restored = logged_at(near, "by restore", unblocked)
    time.sleep(0.5)
    pinger.stop()
    monitor.terminate()
    events = [json.loads(line)["type"] for line in monitor.communicate(timeout=10)[0]
              .splitlines() if line.strip()]
    now = the_connection(near)
    assert now["id"] == conn["id"] and ip_context(now) == ip_context(conn)
    assert "reselect" not in near.log()
    assert events[0] == "INITIAL_STATE_TRANSFER" and "UPDATE" in events  # refreshes
    assert "DELETE" not in events, events
    report("control plane blocked 4 s", pings_lost=pinger.lost,
           restored_after_unblock_s=round(restored - unblocked, 2))
    assert pinger.lost == 0 and pinger.sent >= 40
    assert restored - unblocked <= 1.5
    assert_no_leaks(near, wires=1)
    assert_no_leaks(far, wires=1, leases=1)

