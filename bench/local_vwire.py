"""Same-host vWire vs a plain veth between the same two namespaces, measured in one run.

Prints ping RTT (p50/p99/avg), iperf3 TCP throughput (1 and 4 streams) and vWire setup
latency (p50/p99 over sequential connects), with the vWire/veth ratios, and writes the
figures as JSON to bench/results/local_vwire.json. Needs root, iperf3 and ping.
Every namespace it makes is named nsmdb-<random>-* and deleted on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

from nsmd.testing.sandbox import DaemonProc, endpoint_manifest, host, service_manifest, sh

VETH_CLIENT, VETH_ENDPOINT = "100.64.200.1", "100.64.200.2"
IPERF_PORT = 5201


def ping_stats(netns: str, target: str, count: int) -> dict:
    out = sh("ping", "-c", str(count), "-i", "0.005", "-W", "1", target, netns=netns,
             timeout=count * 0.1 + 30).stdout
    times = sorted(float(t.split("=")[1]) * 1000 for t in out.split() if t.startswith("time="))
    return {"count": len(times), "p50_us": _pct(times, 50), "p99_us": _pct(times, 99),
            "avg_us": round(statistics.fmean(times), 1)}


def iperf(client_ns: str, server_ns: str, target: str, seconds: int, streams: int) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p",
                               str(IPERF_PORT)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh("iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds), "-P",
                 str(streams), "-J", netns=client_ns, timeout=seconds + 30).stdout
        return round(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
    finally:
        server.wait(10)


def setup_latency(d: DaemonProc, netns: str, count: int) -> dict:
    times, ids = [], []
    for _ in range(count):
        started = time.perf_counter()
        conn = d.client.call("POST", "/v1/connections",
                             {"network_service": "bench", "netns": netns})
        times.append((time.perf_counter() - started) * 1000)
        ids.append(conn["id"])
    for conn_id in ids:
        d.client.call("DELETE", f"/v1/connections/{conn_id}")
    times.sort()
    return {"count": count, "p50_ms": round(_pct(times, 50), 2),
            "p99_ms": round(_pct(times, 99), 2)}


def _pct(values: list[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values)) - 1))
    return round(values[index], 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 duration per test")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--connects", type=int, default=50)
    args = ap.parse_args()
    prefix = f"nsmdb-{secrets.token_hex(3)}"
    nse_ns, nsc_ns = f"{prefix}-nse", f"{prefix}-nsc"
    made: list[str] = []
    state = tempfile.mkdtemp(prefix="nsmd-bench-")
    d = DaemonProc(state, "bench")
    try:
        for ns in (nse_ns, nsc_ns):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        sh("ip", "link", "add", "vb-c", "type", "veth", "peer", "name", "vb-e", netns=nsc_ns)
        sh("ip", "link", "set", "vb-e", "netns", nse_ns, netns=nsc_ns)
        sh("ip", "addr", "add", f"{VETH_CLIENT}/30", "dev", "vb-c", netns=nsc_ns)
        sh("ip", "addr", "add", f"{VETH_ENDPOINT}/30", "dev", "vb-e", netns=nse_ns)
        sh("ip", "link", "set", "vb-c", "up", netns=nsc_ns)
        sh("ip", "link", "set", "vb-e", "up", netns=nse_ns)

        d.start()
        d.cli("apply", "-f", "-", stdin=service_manifest("bench") + "---" +
              endpoint_manifest("bench-1", "bench", nse_ns, "169.254.0.0/16"))
        conn = d.client.call("POST", "/v1/connections",
                             {"network_service": "bench", "netns": nsc_ns})
        target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])

        results: dict = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
        for name, addr in (("veth", VETH_ENDPOINT), ("vwire", target)):
            results[name] = {
                "rtt": ping_stats(nsc_ns, addr, args.pings),
                "tcp1_gbps": iperf(nsc_ns, nse_ns, addr, args.seconds, 1),
                "tcp4_gbps": iperf(nsc_ns, nse_ns, addr, args.seconds, 4),
            }
        d.client.call("DELETE", f"/v1/connections/{conn['id']}")
        results["vwire"]["setup"] = setup_latency(d, nsc_ns, args.connects)
        v, w = results["veth"], results["vwire"]
        results["ratios"] = {
            "tcp1_vwire_over_veth": round(w["tcp1_gbps"] / v["tcp1_gbps"], 3),
            "tcp4_vwire_over_veth": round(w["tcp4_gbps"] / v["tcp4_gbps"], 3),
            "rtt_p50_vwire_over_veth": round(w["rtt"]["p50_us"] / v["rtt"]["p50_us"], 2),
        }
    finally:
        d.stop()
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        subprocess.run(["rm", "-rf", state], check=False)

    rows = [("", "veth", "vWire", "vWire/veth"),
            ("TCP 1 stream Gbit/s", v["tcp1_gbps"], w["tcp1_gbps"],
             results["ratios"]["tcp1_vwire_over_veth"]),
            ("TCP 4 streams Gbit/s", v["tcp4_gbps"], w["tcp4_gbps"],
             results["ratios"]["tcp4_vwire_over_veth"]),
            ("ping RTT p50 us", v["rtt"]["p50_us"], w["rtt"]["p50_us"],
             results["ratios"]["rtt_p50_vwire_over_veth"]),
            ("ping RTT p99 us", v["rtt"]["p99_us"], w["rtt"]["p99_us"], ""),
            ("setup p50 / p99 ms", "", f"{w['setup']['p50_ms']} / {w['setup']['p99_ms']}", "")]
    for row in rows:
        print(f"{row[0]:<22}{row[1]!s:>12}{row[2]!s:>16}{row[3]!s:>12}")
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "local_vwire.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
