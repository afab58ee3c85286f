"""What network service functions cost: each built-in stage, and composed chains, against
a direct vWire measured in the same run.

One host: a vWire through an endpoint without functions (the anchor), then one through
an endpoint with each built-in (firewall with 3 rules, and with 100 rules where only the
last matches; nat; ratelimit set far above the rate; capture writing its pcap), then a
5-hop chain (firewall -> passthrough-1 -> 2 -> 3 -> gateway, hops joined in one wire).
Three hosts (underlay 192.0.2.0/24): a direct cross-host vWire, then the same 5-hop
chain spread over them (client and firewall on A, passthroughs 1 and 2 on B relaying, 3
and the gateway on C). Each: iperf3 TCP, one stream, and ping RTT. Writes
bench/results/functions.json. Needs root; namespaces nsmdb-<random>-*, removed on exit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
import time

from benchlib import save
from datapath import iperf, rtt

from nsmd.testing.sandbox import (
    DaemonProc,
    Namespaces,
    host,
    quiet_ipv6,
    trust_domain,
    underlay,
)

TD = "bench.nsmd"
PORT = 5201  # datapath.iperf's
RULES = [{"action": "allow", "proto": "icmp"}, {"action": "allow", "proto": "tcp",
                                                 "ports": str(PORT)},
         {"action": "deny", "proto": "tcp", "ports": "80"}]
MANY_RULES = [{"action": "deny", "proto": "tcp", "ports": str(10000 + i)} for i in range(98)] \
    + [{"action": "allow", "proto": "icmp"}, {"action": "allow", "proto": "tcp",
                                              "ports": str(PORT)}]
CHAIN_SERVICE = """
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: chain}
spec:
  payload: IP
  matches:
    - {source_selector: {app: fw}, routes: [{destination_selector: {app: p1}}]}
    - {source_selector: {app: p1}, routes: [{destination_selector: {app: p2}}]}
    - {source_selector: {app: p2}, routes: [{destination_selector: {app: p3}}]}
    - {source_selector: {app: p3}, routes: [{destination_selector: {app: gw}}]}
    - routes: [{destination_selector: {app: fw}}]
"""


def endpoint(name: str, service: str, nsmd: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkServiceEndpoint",
            "metadata": {"name": name},
            "spec": {"network_service_names": [service],
                     "network_service_labels": {service: {"labels": labels or {}}},
                     "nsmd": nsmd}}


def apply(d: DaemonProc, docs: list) -> None:
    d.client.call("POST", "/v1/apply", {"documents": docs})


def service(name: str) -> dict:
    return {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkService",
            "metadata": {"name": name}, "spec": {"payload": "IP"}}


def measure(d: DaemonProc, svc: str, nsc: str, server_ns: str, args) -> dict:
    conn = d.client.call("POST", "/v1/connections", {"network_service": svc, "netns": nsc})
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    try:
        time.sleep(0.3)
        result = {"rtt": rtt(nsc, target, args.pings),
                  "tcp1": iperf(nsc, server_ns, target, args.seconds, 1, [])}
    finally:
        d.client.call("DELETE", f"/v1/connections/{conn['id']}")
    print(f"    {svc}: {result['tcp1']['gbps']} Gbit/s, RTT p50 {result['rtt']['p50_us']} us",
          flush=True)
    return result


def chain_docs(gw_ns: str, fw_functions: list) -> dict[str, list]:
    """The chain's endpoints by role: fw (with functions), p1..p3, gw."""
    def hop(name: str, nsmd: dict) -> dict:
        return endpoint(f"chain-{name}", "chain", nsmd, {"app": name})
    return {"fw": [hop("fw", {"next": {}, "functions": fw_functions})],
            "p12": [hop("p1", {"next": {}}), hop("p2", {"next": {}})],
            "p3": [hop("p3", {"next": {}})],
            "gw": [hop("gw", {"netns": gw_ns, "ipam": {"prefix": "100.64.99.0/24"}})]}


def one_host(spaces: Namespaces, work: str, args) -> dict:
    d = DaemonProc(os.path.join(work, "one"), "one",
                   env={"NSMD_CAPTURE_MAX_BYTES": "200000000"})
    os.makedirs(d.state_dir)
    d.start()
    try:
        nsc = spaces.make("nsc")
        variants = {
            "direct": [],
            "firewall_3_rules": [{"name": "firewall", "config": {"rules": RULES}}],
            "firewall_100_rules": [{"name": "firewall", "config": {"rules": MANY_RULES}}],
            "nat": [{"name": "nat"}],
            "ratelimit": [{"name": "ratelimit", "config": {"bits_per_s": 10**12}}],
            "capture": [{"name": "capture", "config": {   # in the daemon's capture dir
                "path": "{connection}.pcap", "max_bytes": 200_000_000}}],
        }
        results = {}
        print("--- one host", flush=True)
        for i, (name, functions) in enumerate(variants.items()):
            ns = spaces.make(f"e{i}")
            apply(d, [service(name), endpoint(name, name, {
                "netns": ns, "ipam": {"prefix": f"100.64.{10 + i}.0/24"},
                "functions": functions})])
            results[name] = measure(d, name, nsc, ns, args)
        gw = spaces.make("gw")
        docs = chain_docs(gw, [{"name": "firewall", "config": {"rules": RULES}}])
        apply(d, [_yaml(CHAIN_SERVICE)] + [x for part in docs.values() for x in part])
        results["chain_5_hops"] = measure(d, "chain", nsc, gw, args)
        return results
    finally:
        d.stop()


def three_hosts(spaces: Namespaces, work: str, args) -> dict:
    nodes = underlay(spaces.make, ["a", "b", "c"])
    ids = trust_domain(work, TD, [f"spiffe://{TD}/node/{n}" for n in "abc"])
    daemons = {}
    (na, ipa), (nb, ipb), (nc, ipc) = nodes.items()
    try:
        for tag, ns, ip in (("a", na, ipa), ("b", nb, ipb), ("c", nc, ipc)):
            extra = ("--registry", f"https://{ipa}:7000") if tag != "a" else ()
            d = DaemonProc(os.path.join(work, tag), tag, ns, (
                "--listen", f"{ip}:7000", "--identity-dir", ids[f"spiffe://{TD}/node/{tag}"],
                *extra))
            os.makedirs(d.state_dir)
            daemons[tag] = d.start()
        nsc, direct_ns, gw = spaces.make("xnsc"), spaces.make("xdirect"), spaces.make("xgw")
        for ns in (nsc, direct_ns, gw):
            quiet_ipv6(ns)
        apply(daemons["c"], [_yaml(CHAIN_SERVICE), service("direct"), endpoint(
            "direct", "direct", {"netns": direct_ns, "ipam": {"prefix": "100.64.98.0/24"}})])
        docs = chain_docs(gw, [{"name": "firewall", "config": {"rules": RULES}}])
        apply(daemons["a"], docs["fw"])
        apply(daemons["b"], docs["p12"])
        apply(daemons["c"], docs["p3"] + docs["gw"])
        deadline = time.monotonic() + 15
        while len(daemons["a"].client.call("GET", "/v1/endpoints")) < 6:
            if time.monotonic() > deadline:
                raise RuntimeError("endpoints did not reach the registry")
            time.sleep(0.2)
        print("--- three hosts", flush=True)
        return {"direct": measure(daemons["a"], "direct", nsc, direct_ns, args),
                "chain_5_hops": measure(daemons["a"], "chain", nsc, gw, args)}
    finally:
        for d in daemons.values():
            d.stop()


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 duration per test")
    ap.add_argument("--pings", type=int, default=200)
    args = ap.parse_args()
    spaces = Namespaces(f"nsmdb-{secrets.token_hex(3)}")
    work = tempfile.mkdtemp(prefix="nsmd-bench-")
    try:
        local = one_host(spaces, work, args)
        remote = three_hosts(spaces, work, args)
    finally:
        spaces.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    base, xbase = local["direct"]["tcp1"]["gbps"], remote["direct"]["tcp1"]["gbps"]
    ratios = {name: round(r["tcp1"]["gbps"] / base, 3) for name, r in local.items()}
    ratios["chain_5_hops_three_hosts"] = round(remote["chain_5_hops"]["tcp1"]["gbps"] / xbase, 3)
    print(f"\n{'one host':<26}{'Gbit/s':>10}{'vs direct':>12}{'RTT p50 us':>12}")
    for name, r in local.items():
        print(f"{name:<26}{r['tcp1']['gbps']:>10}{ratios[name]:>12}{r['rtt']['p50_us']:>12}")
    print(f"{'three hosts':<26}")
    for name, r in remote.items():
        ratio = round(r["tcp1"]["gbps"] / xbase, 3)
        print(f"{name:<26}{r['tcp1']['gbps']:>10}{ratio:>12}{r['rtt']['p50_us']:>12}")
    path = save("functions", {"one_host": local, "three_hosts": remote, "ratios": ratios})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
