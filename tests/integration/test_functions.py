"""Network service functions on real vWires: endpoints whose manifests list functions, in
namespaces, on one host and across hosts."""

from __future__ import annotations

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
    from tests.integration.test_multihost import build_two_hosts

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
