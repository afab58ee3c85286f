"""A daemon, an endpoint namespace and client namespaces: vWires for real, over TUN devices."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from nsmd.testing.sandbox import (
    endpoint_manifest,
    host,
    link_exists,
    ping,
    service_manifest,
    sh,
    tcp_transfer,
)


def setup_icmp_responder(d, nse_ns, prefix="169.254.0.0/16"):
    d.cli("apply", "-f", "-", stdin=service_manifest("icmp-responder")
          + "---" + endpoint_manifest("icmp-responder-1", "icmp-responder", nse_ns, prefix))


def apply_two_endpoints(d, ns1, ns2):
    """Service `svc` with endpoints e1 (in ns1) and e2 (in ns2), distinct prefixes."""
    d.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---"
          + endpoint_manifest("e1", "svc", ns1, "100.64.1.0/24") + "---"
          + endpoint_manifest("e2", "svc", ns2, "100.64.2.0/24"))


def test_connect_ping_monitor_close(daemon, netns):
    d = daemon()
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    monitor = subprocess.Popen([sys.executable, "-m", "nsmd", "monitor", "-o", "json",
                                "--service", "icmp-responder"],
                               stdout=subprocess.PIPE, text=True,
                               env={"NSMD_API_SOCKET": d.socket, "PATH": "/usr/bin:/bin"})
    try:
        conn = d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
        ipc = conn["context"]["ip_context"]
        client_ip, endpoint_ip = host(ipc["src_ip_addrs"][0]), host(ipc["dst_ip_addrs"][0])
        assert (client_ip, endpoint_ip) == ("169.254.0.2", "169.254.0.1")
        assert conn["state"] == "UP" and conn["network_service_endpoint_name"] == \
            "icmp-responder-1"
        assert [s["name"] for s in conn["path"]["path_segments"]] == [
            f"nsc@{nsc_ns}", "node-1", "icmp-responder-1"]
        params = conn["mechanism"]["parameters"]
        assert params["name"] == "nsm0" and params["endpoint_name"] == "nsm0"

        result = ping(nsc_ns, endpoint_ip)
        assert result.returncode == 0, result.stdout + result.stderr
        # the endpoint sees the client's address as the source of the echo requests
        addr = sh("ip", "-o", "addr", "show", "nsm0", netns=nse_ns).stdout
        assert "169.254.0.1/32" in addr and "inet6" not in addr

        listed = d.cli_json("get", "connections")
        assert [c["id"] for c in listed] == [conn["id"]]
        metrics = listed[0]["path"]["path_segments"][-1]["metrics"]
        assert int(metrics["tx_packets"]) >= 3 and int(metrics["rx_packets"]) >= 3

        d.cli("close", conn["id"])
        assert not link_exists(nsc_ns, "nsm0") and not link_exists(nse_ns, "nsm0")
        assert d.cli_json("get", "connections") == []
        events = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e["type"] == "DELETE" for e in events):
            events.append(json.loads(monitor.stdout.readline()))
    finally:
        monitor.kill()
        monitor.wait()
    types = [e["type"] for e in events]
    assert types[0] == "INITIAL_STATE_TRANSFER" and events[0]["connections"] == {}
    assert "UPDATE" in types and types[-1] == "DELETE"
    update = next(e for e in events if e["type"] == "UPDATE")
    (seen,) = update["connections"].values()
    assert seen["path"]["path_segments"][0]["id"] == conn["id"]


def test_second_client_gets_other_addresses(daemon, netns):
    d = daemon()
    nse_ns, a, b = netns("nse"), netns("a"), netns("b")
    setup_icmp_responder(d, nse_ns, "100.64.10.0/24")
    first = d.cli_json("connect", "icmp-responder", "--netns", a)
    second = d.cli_json("connect", "icmp-responder", "--netns", b)
    third = d.cli_json("connect", "icmp-responder", "--netns", a)  # same namespace again
    addrs = [tuple(c["context"]["ip_context"][k][0] for k in ("src_ip_addrs", "dst_ip_addrs"))
             for c in (first, second, third)]
    assert len({x for pair in addrs for x in pair}) == 6
    assert third["mechanism"]["parameters"]["name"] == "nsm1"
    for conn, ns in ((first, a), (second, b), (third, a)):
        target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
        assert ping(ns, target, 2).returncode == 0
    # the endpoint holds one interface per vWire
    links = sh("ip", "-o", "link", netns=nse_ns).stdout
    assert all(f"nsm{i}:" in links for i in range(3))


def test_restart_keeps_registrations_and_vwires(daemon, netns):
    d = daemon()
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    conn = d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    for how in ("SIGTERM", "SIGKILL"):
        d.stop(getattr(__import__("signal"), how))
        # the vWire's devices outlive the daemon (persistent TUN), idle until it is back
        assert link_exists(nsc_ns, "nsm0") and link_exists(nse_ns, "nsm0")
        d.start()
        assert [s["name"] for s in d.cli_json("get", "services")] == ["icmp-responder"]
        assert [e["name"] for e in d.cli_json("get", "endpoints")] == ["icmp-responder-1"]
        (again,) = d.cli_json("get", "connections")
        assert again["id"] == conn["id"], how
        assert again["context"]["ip_context"] == conn["context"]["ip_context"], how
        assert ping(nsc_ns, target, 2).returncode == 0, how
    d.cli("close", conn["id"])
    assert not link_exists(nsc_ns, "nsm0")


def test_bad_input_gives_one_line_and_changes_nothing(daemon, netns):
    d = daemon()
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    before = (d.cli("get", "services", "-o", "json").stdout,
              d.cli("get", "endpoints", "-o", "json").stdout)
    bad_prefix = endpoint_manifest("e2", "icmp-responder", nse_ns, "169.254.0.1/16")
    cases = [
        (("apply", "-f", "-"), service_manifest("x") + "---" + bad_prefix,
         "spec.nsmd.ipam.prefix"),
        (("apply", "-f", "-"), service_manifest("l7", payload="HTTP"), "payload"),
        (("apply", "-f", "/nonexistent.yaml"), None, "cannot read /nonexistent.yaml"),
        (("connect", "no-such-service", "--netns", nsc_ns), None,
         "network service 'no-such-service' is not registered"),
        (("connect", "icmp-responder", "--label", "novalue"), None, "--label"),
        (("connect", "icmp-responder", "--netns", "no-such-ns-xyz"), None,
         "no-such-ns-xyz"),
        (("connect", "icmp-responder", "--ifname", "much-too-long-name"), None, "ifname"),
        (("close", "no-such-id"), None, "no connection with id"),
        (("delete", "endpoint", "nope"), None, "not registered"),
        (("get", "nodes"), None, "invalid choice"),
    ]
    for args, stdin, message in cases:
        result = d.cli(*args, check=False, stdin=stdin)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    after = (d.cli("get", "services", "-o", "json").stdout,
             d.cli("get", "endpoints", "-o", "json").stdout)
    assert json.loads(after[0]) == json.loads(before[0])
    assert [e["name"] for e in json.loads(after[1])] == ["icmp-responder-1"]
    assert d.cli_json("get", "connections") == []
    assert "nsm" not in sh("ip", "-o", "link", netns=nsc_ns).stdout


def test_deleting_the_endpoint_in_use_heals_to_another(daemon, netns):
    d = daemon()
    ns1, ns2, nsc_ns = netns("nse1"), netns("nse2"), netns("nsc")
    apply_two_endpoints(d, ns1, ns2)
    conn = d.cli_json("connect", "svc", "--netns", nsc_ns)
    used = conn["network_service_endpoint_name"]
    d.cli("delete", "endpoint", used)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (now,) = d.cli_json("get", "connections") or [None]
        if now and now["state"] == "UP" and now["network_service_endpoint_name"] != used:
            break
        time.sleep(0.1)
    assert now["id"] == conn["id"] and now["network_service_endpoint_name"] != used
    target = host(now["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 2).returncode == 0


def test_tcp_transfer_arrives_intact(daemon, netns):
    d = daemon()
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    conn = d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert tcp_transfer(nse_ns, nsc_ns, target, 4 << 20)


def test_health_metrics_and_status(daemon, netns):
    d = daemon()
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    conn = d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
    ping(nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]), 2)
    assert d.client.call("GET", "/healthz") == {"ok": True}
    metrics = d.client.call("GET", "/metrics")
    assert "nsmd_connections 1.0" in metrics
    assert 'nsmd_requests_total{op="request",result="ok",service="icmp-responder"} 1.0' \
        in metrics
    tx = [line for line in metrics.splitlines()
          if line.startswith('nsmd_packets_total{direction="tx"}')]
    assert tx and float(tx[0].split()[-1]) >= 4
    status = d.cli_json("status")
    assert status["connections"] == 1 and status["hosted_endpoints"] == 1


def test_a_vanished_client_namespace_closes_its_vwire_in_seconds(daemon, netns):
    d = daemon()
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
    sh("ip", "netns", "delete", nsc_ns)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and d.cli_json("get", "connections"):
        time.sleep(0.1)
    assert d.cli_json("get", "connections") == []
    assert not link_exists(nse_ns, "nsm0")  # the endpoint side is cleaned up too


def test_a_vanished_endpoint_namespace_moves_clients_to_another(daemon, netns):
    d = daemon()
    ns1, ns2, nsc_ns = netns("nse1"), netns("nse2"), netns("nsc")
    apply_two_endpoints(d, ns1, ns2)
    conn = d.cli_json("connect", "svc", "--netns", nsc_ns)
    dead_ns = ns1 if conn["network_service_endpoint_name"] == "e1" else ns2
    sh("ip", "netns", "delete", dead_ns)
    deadline = time.monotonic() + 10
    now = conn
    while time.monotonic() < deadline:
        listed = d.cli_json("get", "connections")
        now = listed[0] if listed else now
        if now["network_service_endpoint_name"] != conn["network_service_endpoint_name"] \
                and now["state"] == "UP":
            break
        time.sleep(0.1)
    assert now["network_service_endpoint_name"] != conn["network_service_endpoint_name"]
    target = host(now["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 2).returncode == 0
    # the dead endpoint is withdrawn from the registry, and returns with its namespace
    dead = conn["network_service_endpoint_name"]
    assert [e["name"] for e in d.cli_json("get", "endpoints")] == [now[
        "network_service_endpoint_name"]]
    sh("ip", "netns", "add", dead_ns)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(d.cli_json("get", "endpoints")) < 2:
        time.sleep(0.1)
    assert dead in [e["name"] for e in d.cli_json("get", "endpoints")]


def test_cli_get_formats_and_delete(daemon, netns):
    import yaml

    d = daemon()
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    table = d.cli("get", "services").stdout.splitlines()
    assert table[0].split() == ["NAME", "PAYLOAD", "MATCHES"] and "icmp-responder" in table[1]
    (ns,) = yaml.safe_load(d.cli("get", "services", "-o", "yaml").stdout)
    assert ns == {"name": "icmp-responder", "payload": "IP", "matches": [], "path_ids": []}
    one = yaml.safe_load(d.cli("get", "endpoints", "icmp-responder-1", "-o", "yaml").stdout)
    assert one[0]["nsmd"]["netns"] == nse_ns
    conn = d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
    assert conn["id"] in d.cli("get", "connections").stdout
    status = yaml.safe_load(d.cli("status").stdout)
    assert status["connections"] == 1 and status["dataplane"]["wires"] == 1
    assert d.cli("delete", "service", "icmp-responder").stdout.strip() == \
        "service/icmp-responder deleted"
    assert d.cli("get", "services").stdout.strip() == "no services"
    assert d.cli("delete", "nse", "icmp-responder-1").returncode == 0
    assert not link_exists(nsc_ns, "nsm0")  # its vWire went with it ...
    (down,) = d.cli_json("get", "connections")  # ... and the client waits for another
    assert down["id"] == conn["id"] and down["state"] == "DOWN"
    d.cli("close", conn["id"])
    assert d.cli_json("get", "connections") == []


def test_flows_of_one_vwire_spread_over_the_engines(daemon, netns):
    d = daemon(env={"NSMD_ENGINES": "2", "NSMD_LOCAL_QUEUES": "2"})
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    setup_icmp_responder(d, nse_ns)
    conn = d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert [e["lanes"] for e in d.cli_json("status")["engines"]] == [1, 1]
    before = [e["tx_packets"] for e in d.cli_json("status")["engines"]]
    # sixteen short TCP connections: the kernel spreads flows over the device's queues
    for port in range(16):
        assert tcp_transfer(nse_ns, nsc_ns, target, 200_000, port=5300 + port)
    after = [e["tx_packets"] for e in d.cli_json("status")["engines"]]
    assert all(a - b > 50 for a, b in zip(after, before, strict=True)), (before, after)
    # a restart re-attaches every queue of both devices
    d.stop()
    d.start()
    assert [e["lanes"] for e in d.cli_json("status")["engines"]] == [1, 1]
    assert ping(nsc_ns, target, 2).returncode == 0

