"""Topology-aware selection: every daemon labels its clients' requests and its endpoints
with nodeName (NSM's clientinfo), so NSM's `{{.nodeName}}` templates keep clients on
their node's endpoint."""

from __future__ import annotations

from nsmd.testing.sandbox import endpoint_manifest, ping, wait_until
from tests.integration.beds import build_two_hosts, connect

LOCAL_FIRST = """
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: remote-svc}
spec:
  payload: IP
  matches:
    - source_selector: {}
      routes:
        - destination_selector: {app: icmp-responder, nodeName: "{{.nodeName}}"}
"""


def test_clients_pick_their_own_nodes_endpoint(netns, daemon, tmp_path):
    near, far, _, _, _ = build_two_hosts(netns, daemon, tmp_path, {"NSMD_KEEPALIVE_S": "0.5"})
    near_nse = netns("nse-near")
    far.cli("apply", "-f", "-", stdin=LOCAL_FIRST)  # its owner changes the service
    near.cli("apply", "-f", "-", stdin=endpoint_manifest(
        "near-1", "remote-svc", near_nse, "100.64.51.0/24"))
    wait_until(lambda: len(far.cli_json("get", "endpoints")) == 2)
    (registered,) = [e for e in far.cli_json("get", "endpoints") if e["name"] == "near-1"]
    assert registered["network_service_labels"]["remote-svc"]["labels"]["nodeName"] == "n1"
    for d, expected in ((near, "near-1"), (far, "far-1")):
        client_ns = netns(f"c-{d.name}")
        for _ in range(2):  # not round robin luck: every time
            conn, target = connect(d, "remote-svc", client_ns)
            assert conn["network_service_endpoint_name"] == expected
            assert conn["labels"]["nodeName"] == d.name
            assert ping(client_ns, target, 1).returncode == 0
            d.cli("close", conn["id"])
