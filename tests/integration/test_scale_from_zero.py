"""Scale from zero, NSM's scale-from-zero service unchanged: a client on a node without a
local endpoint falls through to the supplier, which starts one on the node (its own
namespace, its labels plus nodeName) and hands the request to it; later clients find it
directly; once idle it is retired, namespace and registration gone."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

from nsmd.testing.sandbox import host, ping, sh, wait_until

DATA = Path(__file__).parent.parent / "data" / "nsm"
SUPPLIER = """
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {name: %s}
spec:
  network_service_names: [scale-from-zero]
  network_service_labels: {scale-from-zero: {labels: {app: icmp-responder-supplier}}}
  nsmd:
    supplier:
      labels: {app: nse-icmp-responder}
      ipam: {prefix: 172.16.3.0/24}
      idle_s: 2
"""


def test_a_supplier_starts_an_endpoint_on_demand_and_retires_it_when_idle(netns, daemon):
    supplier = f"supplier-{secrets.token_hex(3)}"
    supplied, space = f"{supplier}-n1", f"nsmd-{supplier}-n1"
    d = daemon("n1")
    try:
        d.cli("apply", "-f", str(DATA / "scale-from-zero-netsvc.yaml"))
        d.cli("apply", "-f", "-", stdin=SUPPLIER % supplier)
        first_ns, second_ns = netns("nsc1"), netns("nsc2")
        conn = d.cli_json("connect", "scale-from-zero", "--netns", first_ns)
        names = [s["name"] for s in conn["path"]["path_segments"]]
        assert names[2] == supplier and names[-1] == supplied, names
        assert ping(first_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                    2).returncode == 0
        (nse,) = [e for e in d.cli_json("get", "endpoints") if e["name"] == supplied]
        assert nse["network_service_labels"]["scale-from-zero"]["labels"] == {
            "app": "nse-icmp-responder", "nodeName": "n1"}
        assert ": nsm0" in sh("ip", "-o", "link", netns=space).stdout
        # the next client of this node matches the supplied endpoint directly
        again = d.cli_json("connect", "scale-from-zero", "--netns", second_ns)
        assert [s["name"] for s in again["path"]["path_segments"]][2:] == [supplied]
        # idle: retired 2 s after its last vWire closed, not before
        d.cli("close", conn["id"])
        time.sleep(3)
        assert any(e["name"] == supplied for e in d.cli_json("get", "endpoints"))
        d.cli("close", again["id"])
        wait_until(lambda: all(e["name"] != supplied for e in d.cli_json("get", "endpoints")),
                   timeout=10)
        assert space not in sh("ip", "netns", "list").stdout
    finally:
        subprocess.run(["ip", "netns", "delete", space], check=False, capture_output=True)
