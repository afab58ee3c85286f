"""vL3, measured: client to client across two hosts over vL3 against a direct vWire
between the same hosts, in one run; the time a new vL3 endpoint takes to join the mesh,
with few and with many clients attached (membership must cost O(endpoints), not
O(clients)); DNS lookup latency for a name of the own endpoint, of the other host's
endpoint, and outside the zone.

    sudo .venv/bin/python bench/vl3.py [--seconds 8] [--rounds 2] [--clients 200]

Two node namespaces on a bridge (192.0.2.0/24), a daemon in each (n1 holds the
registry), a vL3 endpoint in each, vWire addresses from 100.64.0.0/16. The direct vWire
runs from a client on n1 to an ordinary endpoint on n2 (169.254.80.0/24). Writes
bench/results/vl3.json. Every namespace is named nsmdb-<random>-* and removed on exit;
only processes it started are stopped, by PID.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

import yaml
from benchlib import save
from datapath import Bed, iperf, mean_run, need_tools, rtt

from nsmd.testing.sandbox import (
    VL3_SERVICE,
    DaemonProc,
    endpoint_manifest,
    host,
    service_manifest,
    sh,
    trust_domain,
    underlay,
    vl3_endpoint_manifest,
)

DOMAIN = "bench.nsmd"
# Run in a client namespace: p50/p99 in ms of `count` lookups of a name at a resolver.
LOOKUPS = """
import json, sys, time
from dnslib import DNSRecord
server, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for _ in range(count):
    t0 = time.perf_counter()
    answer = DNSRecord.parse(DNSRecord.question(name).send(server, 53, timeout=2))
    times.append((time.perf_counter() - t0) * 1000)
    assert answer.rr, (name, str(answer))
times.sort()
print(json.dumps({"p50_ms": round(times[len(times) // 2], 2),
                  "p99_ms": round(times[int(len(times) * 0.99) - 1], 2)}))
"""


def wait(predicate, timeout: float = 30.0, interval: float = 0.02) -> float:
    """Seconds until `predicate` held; raises after `timeout`."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)
    return time.monotonic() - t0


def mesh_count(daemons: list[DaemonProc]) -> int:
    return len({c["path"]["path_segments"][0]["id"] for d in daemons
                for c in d.client.call("GET", "/v1/connections")
                if c["labels"].get("vl3Peer")})


def routes(netns: str) -> int:
    return len(sh("ip", "-4", "route", "show", netns=netns).stdout.splitlines())


def joined_at(daemons: list[DaemonProc], name: str) -> list[float]:
    """When (time.time(), from the daemons' logs) each mesh vWire with `name` came up."""
    stamps = []
    for d in daemons:
        for line in d.log().splitlines():
            if "vL3 mesh:" in line and " joined " in line and name in line.split("mesh:")[1]:
                when = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                stamps.append(when.timestamp())
    return stamps


def join_time(bed: Bed, daemons: list[DaemonProc], host_daemon: DaemonProc, name: str,
              routers: list[str]) -> dict:
    """Applies a new vL3 endpoint and times it until every pair has its mesh vWire (from
    the daemons' own log lines, so the measuring does not load them)."""
    peers = len({e["name"] for e in daemons[0].client.call("GET", "/v1/endpoints")
                 if e["network_service_names"] == ["vl3"]})
    routes_before = [routes(ns) for ns in routers]
    router = bed.netns(f"r-{name}")
    t0 = time.time()
    host_daemon.client.call("POST", "/v1/apply",
                            {"documents": [yaml.safe_load(vl3_endpoint_manifest(name, router))]})
    wait(lambda: len(joined_at(daemons, name)) == peers, interval=0.05)
    return {"join_s": round(max(joined_at(daemons, name)) - t0, 3),
            "mesh_vwires_added": peers,
            "routes_added_per_existing_endpoint": [routes(ns) - b for ns, b in
                                                   zip(routers, routes_before, strict=True)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=8, help="iperf3 duration per test")
    ap.add_argument("--rounds", type=int, default=2,
                    help="TCP runs of each path, alternating direct and vL3 (the VM's drift "
                    "between two back-to-back runs is as large as the difference measured)")
    ap.add_argument("--pings", type=int, default=500)
    ap.add_argument("--clients", type=int, default=200,
                    help="clients attached before the second join (scale check)")
    ap.add_argument("--lookups", type=int, default=300)
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    need_tools()
    bed = Bed()
    daemons: list[DaemonProc] = []
    results: dict = {}
    try:
        nodes = underlay(bed.netns, ["n1", "n2"])
        (n1, ip1), (n2, ip2) = nodes.items()
        ids = trust_domain(bed.work, DOMAIN, [f"spiffe://{DOMAIN}/{n}" for n in ("n1", "n2")])
        for node in (n1, n2):  # each host's "own resolver", on its loopback
            bed.start(node, sys.executable, "-m", "dnslib.fixedresolver", "--address",
                      "127.0.0.1", "--port", "5353", "--response", ". 60 IN A 198.51.100.7",
                      "--log=-request,-reply,-recv,-send")
        for name, ns, ip in (("n1", n1, ip1), ("n2", n2, ip2)):
            registry = ("--registry", f"https://{ip1}:7000") if name == "n2" else ()
            d = DaemonProc(os.path.join(bed.work, name), name, ns, (
                "--listen", f"{ip}:7000", *registry, "--identity-dir",
                ids[f"spiffe://{DOMAIN}/{name}"], "--dns-upstream", "127.0.0.1:5353",
                "--vl3-dns-forward"))
            os.makedirs(d.state_dir)
            daemons.append(d.start())
        d1, d2 = daemons
        direct_nse = bed.netns("direct-nse")
        d1.cli("apply", "-f", "-", stdin=VL3_SERVICE)
        d2.cli("apply", "-f", "-", stdin=service_manifest("direct") + "---" +
               endpoint_manifest("direct-1", "direct", direct_nse, "169.254.80.0/24"))
        routers = [bed.netns("r-vl3-n1"), bed.netns("r-vl3-n2")]
        for d, router in zip(daemons, routers, strict=True):
            d.cli("apply", "-f", "-", stdin=vl3_endpoint_manifest(f"vl3-{d.name}", router))
        wait(lambda: mesh_count(daemons) == 1)
        c1, c2 = bed.netns("c1"), bed.netns("c2")
        first = d1.cli_json("connect", "vl3", "--netns", c1, "--client-name", "one")
        second = d2.cli_json("connect", "vl3", "--netns", c2, "--client-name", "two")
        direct = d1.cli_json("connect", "direct", "--netns", c1)
        to_two = host(second["context"]["ip_context"]["src_ip_addrs"][0])
        to_direct = host(direct["context"]["ip_context"]["dst_ip_addrs"][0])
        pids = [d.proc.pid for d in daemons]
        paths = {"direct": (direct_nse, to_direct, "direct vWire, n1 -> n2"),
                 "vl3": (c2, to_two, "vL3, client on n1 -> client on n2")}
        runs: dict[str, list[dict]] = {name: [] for name in paths}
        for name, (_, target, _) in paths.items():
            results[name] = {"rtt": rtt(c1, target, args.pings)}
        for k in range(args.rounds):
            for name, (server_ns, target, label) in paths.items():
                runs[name].append(iperf(c1, server_ns, target, args.seconds, 1, pids))
                print(f"--- {label}, round {k + 1}: {json.dumps(runs[name][-1])}", flush=True)
        for name in paths:
            results[name]["tcp1"] = mean_run(runs[name])
            results[name]["tcp1_rounds"] = runs[name]
        print(f"    {json.dumps({name: results[name] for name in paths})}", flush=True)
        one = host(first["context"]["ip_context"]["src_ip_addrs"][0])
        server = host(first["context"]["dns_context"]["configs"][0]["dns_server_ips"][0])
        results["dns"] = {
            label: json.loads(sh(sys.executable, "-c", LOOKUPS, server, name,
                                 str(args.lookups), netns=c1, timeout=120).stdout)
            for label, name in (("own_endpoint", "one.vl3"), ("other_endpoint", "two.vl3"),
                                ("outside_zone", "www.example.test"))}
        assert one
        results["join_few_clients"] = join_time(bed, daemons, d2, "vl3-n2b", routers)
        crowd = bed.netns("crowd")
        for _ in range(args.clients):
            d1.client.call("POST", "/v1/connections", {"network_service": "vl3",
                                                       "netns": crowd})
        results["clients_on_n1"] = args.clients + 1
        results["join_many_clients"] = join_time(bed, daemons, d2, "vl3-n2c", routers)
    finally:
        for d in daemons:
            d.stop()
        bed.close()
    ratio = lambda a, b: round(a / b, 2) if b else None  # noqa: E731
    results["ratios"] = {
        "rtt_p50_vl3_over_direct": ratio(results["vl3"]["rtt"]["p50_us"],
                                         results["direct"]["rtt"]["p50_us"]),
        "tcp1_vl3_over_direct": ratio(results["vl3"]["tcp1"]["gbps"],
                                      results["direct"]["tcp1"]["gbps"]),
        "join_many_over_few": ratio(results["join_many_clients"]["join_s"],
                                    results["join_few_clients"]["join_s"]),
    }
    path = save("vl3", results)
    r = results
    print(f"\nclient->client across hosts: vL3 RTT p50 {r['vl3']['rtt']['p50_us']} us vs direct "
          f"{r['direct']['rtt']['p50_us']} us ({r['ratios']['rtt_p50_vl3_over_direct']}x); TCP "
          f"{r['vl3']['tcp1']['gbps']} vs {r['direct']['tcp1']['gbps']} Gbit/s "
          f"({r['ratios']['tcp1_vl3_over_direct']}x)")
    print(f"new endpoint joins the mesh: {r['join_few_clients']['join_s']} s with 2 clients, "
          f"{r['join_many_clients']['join_s']} s with {r['clients_on_n1'] + 1} "
          f"({r['ratios']['join_many_over_few']}x); routes added per existing endpoint "
          f"{r['join_many_clients']['routes_added_per_existing_endpoint']}")
    print("DNS lookups: " + ", ".join(f"{k} p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms"
                                      for k, v in r["dns"].items()))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
