"""Inter-domain (NSM's interdomain and floating examples, without Kubernetes): four
domains with trust domains of their own on one underlay. A reaches B's service as
`svc-b@b.test` (registry from a --domains file); B registers an endpoint as
`nse-f@float.test` in a floating registry it finds by DNS SRV; A requests
`svc@float.test` and lands on B's endpoint; C is not federated with A, so A's request
there is refused with nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from nsmd.testing.sandbox import (
    endpoint_manifest,
    host,
    ping,
    service_manifest,
    sh,
    tcp_transfer,
    trust_domain,
    underlay,
    wait_until,
)
from tests.integration.beds import report

DOMAINS = {"a": "a.test", "b": "b.test", "f": "float.test", "c": "c.test"}
ZONE = """
_nsmd-registry._tcp.float.test. 60 IN SRV 0 0 7000 nf.float.test.
nf.float.test. 60 IN A {ip}
"""


def names(d, kind: str) -> set[str]:
    return {e["name"] for e in d.cli_json("get", kind)}


def test_requests_cross_domains_and_a_floating_registry(netns, daemon, tmp_path):
    nodes = underlay(netns, ["na", "nb", "nf", "nc"])
    ns_of = {key: ns for key, ns in zip("abfc", nodes, strict=True)}
    ip_of = {key: nodes[ns] for key, ns in ns_of.items()}
    svids, bundles = {}, {}
    for key, td in DOMAINS.items():
        svids[key] = trust_domain(str(tmp_path), td, [f"spiffe://{td}/node/{key}"])[
            f"spiffe://{td}/node/{key}"]
        bundles[key] = os.path.join(svids[key], "bundle.pem")
    table = tmp_path / "domains.toml"
    table.write_text("".join(f'"{DOMAINS[k]}" = "https://{ip_of[k]}:7000"\n' for k in "bfc"))
    zone = tmp_path / "float.zone"
    zone.write_text(ZONE.format(ip=ip_of["f"]))
    srv = subprocess.Popen(  # B's "host resolver": knows where float.test's registry is
        ["ip", "netns", "exec", ns_of["b"], sys.executable, "-m", "dnslib.zoneresolver",
         "--zone", str(zone), "--address", "127.0.0.1", "--port", "5353",
         "--log=-request,-reply,-truncated,-error,-recv,-send,-data"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def federate(*keys):
            return tuple(a for k in keys for a in ("--federate", f"{DOMAINS[k]}={bundles[k]}"))

        def start(key, *extra):
            return daemon(key, ns_of[key], ("--listen", f"{ip_of[key]}:7000",
                                            "--identity-dir", svids[key], *extra),
                          {"NSMD_KEEPALIVE_S": "0.5"})

        # federated trust domains get only what a policy names them for
        b_policy, f_policy = tmp_path / "b-policy.yaml", tmp_path / "f-policy.yaml"
        b_policy.write_text('default: {request: ["*", "spiffe://a.test/*"]}\n')
        f_policy.write_text('default: {register: ["*", "spiffe://b.test/*"]}\n')
        da = start("a", "--domains", str(table), *federate("b", "f"))
        db = start("b", "--dns-upstream", "127.0.0.1:5353", "--policy", str(b_policy),
                   *federate("a", "f"))
        df = start("f", "--registry-only", "--policy", str(f_policy), *federate("a", "b"))
        dc = start("c", *federate("a"))

        # A -> B: service@domain
        nse_b, client = netns("nse-b"), netns("client")
        db.cli("apply", "-f", "-", stdin=service_manifest("svc-b") + "---" +
               endpoint_manifest("nse-b", "svc-b", nse_b, "100.64.60.0/24"))
        t0 = time.perf_counter()  # cold: finds B's registry, follows it, connects
        conn = da.client.call("POST", "/v1/connections", {"network_service": "svc-b@b.test",
                                                          "netns": client})
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(5):  # warm: B's registry is followed already
            t0 = time.perf_counter()
            again = da.client.call("POST", "/v1/connections", {
                "network_service": "svc-b@b.test", "netns": netns(f"c{len(warm)}")})
            warm.append(time.perf_counter() - t0)
            da.client.call("DELETE", f"/v1/connections/{again['id']}")
        report("cross-domain connect", cold_s=round(cold, 3),
               warm_p50_s=round(sorted(warm)[len(warm) // 2], 3))
        assert conn["network_service"] == "svc-b@b.test"
        assert conn["network_service_endpoint_name"] == "nse-b@b.test"
        target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
        assert ping(client, target, 2).returncode == 0
        assert tcp_transfer(nse_b, client, target, 1 << 20)
        (served,) = db.cli_json("get", "connections")  # B served it under its own names
        assert served["network_service"] == "svc-b"

        # floating: the service applied at the floating registry unchanged, B's endpoint
        # registered there as nse-f@float.test, A's client asks for svc@float.test
        df.cli("apply", "-f", "-", stdin=service_manifest("svc"))
        nse_f = netns("nse-f")
        db.cli("apply", "-f", "-", stdin=endpoint_manifest(
            "nse-f@float.test", "svc@float.test", nse_f, "100.64.61.0/24"))
        wait_until(lambda: "nse-f" in names(df, "endpoints"))
        (record,) = [e for e in df.cli_json("get", "endpoints") if e["name"] == "nse-f"]
        assert record["url"] == f"https://{ip_of['b']}:7000"  # where it really is
        floating = da.cli_json("connect", "svc@float.test", "--netns", client)
        assert floating["network_service_endpoint_name"] == "nse-f@float.test"
        target_f = host(floating["context"]["ip_context"]["dst_ip_addrs"][0])
        assert ping(client, target_f, 2).returncode == 0
        refused = df.cli("connect", "svc", "--netns", client, "--timeout", "0", check=False)
        assert refused.returncode != 0 and "registry-only" in refused.stderr

        # C is not federated with A: refused, nothing left behind
        nse_c = netns("nse-c")
        dc.cli("apply", "-f", "-", stdin=service_manifest("svc-c") + "---" +
               endpoint_manifest("nse-c", "svc-c", nse_c, "100.64.62.0/24"))
        links_before = sh("ip", "-o", "link", netns=client).stdout
        denied = da.cli("connect", "svc-c@c.test", "--netns", client, "--timeout", "0",
                        check=False)
        assert denied.returncode != 0, denied.stdout
        assert len(da.cli_json("get", "connections")) == 2
        assert sh("ip", "-o", "link", netns=client).stdout == links_before
        assert "CERTIFICATE_VERIFY_FAILED" in da.log()  # C's certificate: no CA A trusts
        assert "domain c.test: its registry at" in denied.stderr, denied.stderr

        da.cli("close", floating["id"])
        da.cli("close", conn["id"])
        wait_until(lambda: db.cli_json("get", "connections") == [])
    finally:
        srv.terminate()
        srv.wait(timeout=5)
