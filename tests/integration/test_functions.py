"""Network service functions on real vWires: endpoints whose manifests list functions, in
namespaces, on one host and across hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from nsmd.testing.sandbox import host, ping, service_manifest, sh, wait_until

FIREWALL = """
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {name: guarded}
spec:
  network_service_names: [svc]
  network_service_labels: {svc: {labels: {app: guarded}}}
  nsmd:
    netns: %s
    ipam: {prefix: 169.254.40.0/24}
    functions:
      - name: firewall
        config:
          default: deny
          rules:
            - {action: allow, proto: icmp}
            - {action: allow, proto: tcp, ports: "8080,9000-9100"}
            - {action: deny, proto: tcp, ports: "80"}
"""


def tcp_connects(client_ns: str, server_ns: str, address: str, port: int) -> bool:
    """Whether a TCP connection from client_ns reaches a listener on `port` in server_ns."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c",
         f"import socket;s=socket.create_server(('0.0.0.0',{port}));s.settimeout(3);"
         "c,_=s.accept();c.sendall(b'hi')"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        result = sh(sys.executable, "-c",
                    f"import socket;c=socket.create_connection(('{address}',{port}),timeout=1.5);"
                    "print(c.recv(2).decode())", netns=client_ns, check=False)
        return result.stdout.strip() == "hi"
    finally:
        server.kill()
        server.wait()


def test_a_firewall_function_filters_and_counts(netns, daemon):
    d = daemon("n1")
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    d.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" + FIREWALL % nse_ns)
    conn = d.cli_json("connect", "svc", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 2).returncode == 0                    # rule 0
    assert tcp_connects(nsc_ns, nse_ns, target, 8080)                  # rule 1
    assert tcp_connects(nsc_ns, nse_ns, target, 9050)
    assert not tcp_connects(nsc_ns, nse_ns, target, 80)                # rule 2
    assert not tcp_connects(nsc_ns, nse_ns, target, 22)                # default
    # the endpoint may not open a connection to the client either (no flow of the client's)
    assert not tcp_connects(nse_ns, nsc_ns, host(conn["context"]["ip_context"]["src_ip_addrs"][0]),
                            8080)
    (now,) = d.cli_json("get", "connections")
    metrics = now["path"]["path_segments"][-1]["metrics"]
    assert int(metrics["firewall.rule0_packets"]) >= 2
    assert int(metrics["firewall.rule1_packets"]) >= 2
    assert int(metrics["firewall.rule2_packets"]) >= 1
    assert int(metrics["firewall.default_packets"]) >= 1
    assert int(metrics["firewall.replies"]) >= 2


def test_bad_function_configs_give_one_line_and_change_nothing(netns, daemon):
    d = daemon("n1")
    nse_ns = netns("nse")
    bad = FIREWALL.replace('ports: "80"}', 'ports: "eighty"}') % nse_ns
    result = d.cli("apply", "-f", "-", check=False, stdin=service_manifest("svc") + "---" + bad)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "spec.nsmd.functions[0].config.rules[2].ports" in line, line
    assert d.cli_json("get", "services") == [] and d.cli_json("get", "endpoints") == []


def test_functions_run_on_the_endpoint_host_across_hosts(netns, daemon, tmp_path):
    from tests.integration.beds import build_two_hosts

    near, far, nse_ns, nsc_ns, _ = build_two_hosts(
        netns, daemon, tmp_path, {"NSMD_KEEPALIVE_S": "0.5"}, service="svc")
    far.cli("apply", "-f", "-", stdin=FIREWALL % nse_ns)
    wait_until(lambda: any(e["name"] == "guarded" for e in near.cli_json("get", "endpoints")))
    conn = near.cli_json("connect", "svc", "--netns", nsc_ns, "--label", "app=guarded")
    if conn["network_service_endpoint_name"] != "guarded":  # round robin: ask again
        near.cli("close", conn["id"])
        conn = near.cli_json("connect", "svc", "--netns", nsc_ns)
    assert conn["network_service_endpoint_name"] == "guarded"
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    assert ping(nsc_ns, target, 2).returncode == 0
    assert tcp_connects(nsc_ns, nse_ns, target, 8080)
    assert not tcp_connects(nsc_ns, nse_ns, target, 80)
    (far_conn,) = [c for c in far.cli_json("get", "connections")
                   if c["network_service_endpoint_name"] == "guarded"]
    metrics = far_conn["path"]["path_segments"][-1]["metrics"]
    assert int(metrics["firewall.rule2_packets"]) >= 1


CHAIN = """
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {name: chained}
spec:
  network_service_names: [svc]
  nsmd:
    netns: %s
    ipam: {prefix: 169.254.41.0/24}
    functions:
      - {name: nat}
      - {name: capture, config: {path: %s, max_bytes: 100000}}
"""


def test_nat_and_capture_on_one_vwire(netns, daemon, tmp_path):
    """A host behind the client (an address on its loopback) reaches the endpoint through
    the client's vWire address; the capture after the NAT sees the translated packets."""
    d = daemon("n1")
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    d.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" + CHAIN % (nse_ns,
                                                                               "cap.pcap"))
    conn = d.cli_json("connect", "svc", "--netns", nsc_ns)
    ipc = conn["context"]["ip_context"]
    target, mine = host(ipc["dst_ip_addrs"][0]), host(ipc["src_ip_addrs"][0])
    sh("ip", "addr", "add", "100.64.77.5/32", "dev", "lo", netns=nsc_ns)
    server = subprocess.Popen(
        ["ip", "netns", "exec", nse_ns, sys.executable, "-c",
         "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
         "s.bind(('0.0.0.0',5300));s.settimeout(5);d,a=s.recvfrom(100);"
         "s.sendto(a[0].encode(),a);print(a[0])"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        reply = sh(sys.executable, "-c",
                   "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                   "s.bind(('100.64.77.5',0));s.settimeout(3);"
                   f"s.sendto(b'hello',('{target}',5300));print(s.recv(100).decode())",
                   netns=nsc_ns, check=False)
        seen_by_server = server.communicate(timeout=10)[0].strip()
    finally:
        server.kill()
    assert seen_by_server == mine                   # the endpoint saw the vWire address
    assert reply.stdout.strip() == mine, reply.stderr   # and the answer found its way back
    capture_file = os.path.join(d.state_dir, "capture",
                                f"cap-{conn['path']['path_segments'][-1]['id'][:8]}.pcap")
    wait_until(lambda: b"hello" in open(capture_file, "rb").read(), timeout=3)
    out = sh("tcpdump", "-n", "-r", capture_file).stdout
    assert f"{mine}." in out and f"> {target}.5300: UDP" in out and "100.64.77.5" not in out


def test_the_rate_limiter_holds_its_rate_within_ten_percent(netns, daemon):
    d = daemon("n1")
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    limited = CHAIN.replace("chained", "limited").replace(
        "      - {name: nat}\n      - {name: capture, config: {path: %s, max_bytes: 100000}}\n",
        "      - {name: ratelimit, config: {bits_per_s: 20000000}}\n")
    d.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" + limited % nse_ns)
    conn = d.cli_json("connect", "svc", "--netns", nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    server = subprocess.Popen(["ip", "netns", "exec", nse_ns, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        report = json.loads(sh("iperf3", "-c", target, "-u", "-b", "40M", "-l", "1200", "-t",
                               "3", "-J", netns=nsc_ns, timeout=30).stdout)
    finally:
        server.kill()
        server.wait()
    # iperf3 counts UDP payload; the limiter counts whole IP packets (1228 bytes each)
    received = report["end"]["sum_received"]["bits_per_second"] * 1228 / 1200
    assert 18e6 <= received <= 22e6, received
