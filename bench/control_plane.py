"""Control-plane numbers, measured against a real daemon over its API in one run.

- vWire setup latency p50/p99, same host (sequential connects), beside the kernel's own
  cost of making the two devices the same way, measured in the same run;
- N concurrent connects (default 1000) on one daemon: total time;
- daemon memory per idle vWire (RSS growth over --idle vWires made one after another, and
  over as many again), and the mean time of a connect in each of those two batches;
- a registry of 100,000 endpoints: registration rate (manifests applied in batches),
  Find latency p50/p99 by name and by service, watch delay (register -> event).

Writes bench/results/control_plane.json. Needs root. Namespaces: nsmdb-<random>-*.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp
from benchlib import one_host, p50_p99, rss_kib, save, setup_latency_ms

from nsmd.testing.sandbox import DaemonProc


async def concurrent_connects(sock: str, netns: str, count: int) -> tuple[float, list[str]]:
    connector = aiohttp.UnixConnector(path=sock, limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        async def one(i: int) -> str:
            async with http.post("http://nsmd/v1/connections", json={
                    "network_service": "bench", "netns": netns}) as r:
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"connect {i}: {body}")
                return body["id"]
        started = time.perf_counter()
        ids = await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started, list(ids)


async def close_all(sock: str, ids: list[str]) -> None:
    connector = aiohttp.UnixConnector(path=sock, limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def one(cid: str) -> None:
            async with http.delete(f"http://nsmd/v1/connections/{cid}") as r:
                await r.read()
        await asyncio.gather(*(one(c) for c in ids))


async def kernel_device_pairs_ms(nsc: str, nse: str, count: int) -> dict[str, float]:
    """The kernel's own share of a same-host setup, measured alike: both TUN devices of a
    vWire made, addressed, routed and brought up in their namespaces, the same way the
    daemon does (nsmd.tundev on a per-namespace thread), then removed; p50/p99 in ms."""
    from nsmd import netns, tundev

    times = []
    for i in range(count):
        client = tundev.InterfaceConfig("kb%d", [f"100.127.{i % 250}.2/32"],
                                        [f"100.127.{i % 250}.1/32"], 1500, offload=True)
        endpoint = tundev.InterfaceConfig("kb%d", [f"100.127.{i % 250}.1/32"],
                                          [f"100.127.{i % 250}.2/32"], 1500, offload=True)
        t0 = time.perf_counter()
        made = await asyncio.gather(netns.run_in(nsc, tundev.create, client, False),
                                    netns.run_in(nse, tundev.create, endpoint, False))
        times.append((time.perf_counter() - t0) * 1000)
        for fds, _ in made:
            tundev.remove(fds)
    netns.stop_all()
    return p50_p99(times)


def registry_scale(d: DaemonProc, total: int, batch: int) -> dict:
    started = time.perf_counter()
    for first in range(0, total, batch):
        docs = [{"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkServiceEndpoint",
                 "metadata": {"name": f"r-{i}"},
                 "spec": {"network_service_names": [f"svc-{i % 1000}"],
                          "network_service_labels": {f"svc-{i % 1000}": {
                              "labels": {"zone": f"z{i % 7}"}}}}}
                for i in range(first, min(total, first + batch))]
        d.client.call("POST", "/v1/apply", {"documents": docs})
    rate = total / (time.perf_counter() - started)
    by_name, by_service = [], []
    for i in range(300):
        t0 = time.perf_counter()
        d.client.call("GET", f"/v1/endpoints?name=r-{(i * 7919) % total}")
        by_name.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        found = d.client.call("GET", f"/v1/endpoints?service=svc-{i}")
        by_service.append((time.perf_counter() - t0) * 1000)
    assert len(found) == total // 1000
    delays = []
    stream = d.client.stream("/v1/endpoints?watch=true&service=svc-watch")
    next(stream)  # {"synced": true}
    for i in range(20):
        t0 = time.perf_counter()
        d.client.call("POST", "/v1/apply", {"documents": [{
            "apiVersion": "networkservicemesh.io/v1", "kind": "NetworkServiceEndpoint",
            "metadata": {"name": f"w-{i}"}, "spec": {"network_service_names": ["svc-watch"]}}]})
        event = next(stream)
        delays.append((time.perf_counter() - t0) * 1000)
        assert event["item"]["name"] == f"w-{i}"
    stream.close()
    return {"endpoints": total, "register_per_s": round(rate),
            "find_by_name_ms": p50_p99(by_name),
            "find_by_service_ms": p50_p99(by_service),
            "watch_delay_ms": p50_p99(delays),
            "daemon_rss_mib": round(rss_kib(d.proc.pid) / 1024, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connects", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=500, help="vWires for the memory figure")
    ap.add_argument("--sequential", type=int, default=100)
    ap.add_argument("--endpoints", type=int, default=100_000)
    args = ap.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count()}}
    with one_host("bench", "100.64.0.0/10") as (d, nse, nsc):
        results["setup_same_host_ms"] = setup_latency_ms(d, "bench", nsc, args.sequential)
        results["kernel_device_pair_ms"] = asyncio.run(
            kernel_device_pairs_ms(nsc, nse, args.sequential))
        print(f"setup same host: {results['setup_same_host_ms']} (the devices alone: "
              f"{results['kernel_device_pair_ms']})", flush=True)

        # memory: idle vWires made one after another (no burst to inflate the heap)
        # and a second batch as many again: its growth is the marginal cost (the first
        # batch fills caches of fixed size, and reuses memory the setup runs above freed);
        # bench/run.py's verdict needs both
        # (and how long each connect took in each batch: setup must not grow with the
        # vWires a namespace already has)
        rss = [rss_kib(d.proc.pid)]
        idle: list[str] = []
        batch_ms: list[float] = []
        for _ in range(2):
            t0 = time.perf_counter()
            idle += [d.client.call("POST", "/v1/connections", {"network_service": "bench",
                                                               "netns": nsc})["id"]
                     for _ in range(args.idle)]
            batch_ms.append(round((time.perf_counter() - t0) * 1000 / args.idle, 2))
            time.sleep(2)
            rss.append(rss_kib(d.proc.pid))
        asyncio.run(close_all(d.socket, idle))
        results["memory"] = {"idle_vwires": args.idle, "rss_kib_per_idle_vwire":
                             round((rss[1] - rss[0]) / args.idle, 1),
                             "rss_kib_per_idle_vwire_next": round((rss[2] - rss[1]) / args.idle,
                                                                  1),
                             "connect_ms_each": batch_ms}
        print(f"memory: {results['memory']}", flush=True)

        rss_before = rss_kib(d.proc.pid)
        elapsed, ids = asyncio.run(concurrent_connects(d.socket, nsc, args.connects))
        time.sleep(2)
        rss_after = rss_kib(d.proc.pid)
        results["concurrent_connects"] = {
            "count": args.connects, "seconds": round(elapsed, 2),
            "rss_kib_per_vwire_after_burst": round((rss_after - rss_before) / args.connects,
                                                   1)}
        print(f"concurrent connects: {results['concurrent_connects']}", flush=True)
        t0 = time.perf_counter()
        asyncio.run(close_all(d.socket, ids))
        results["concurrent_connects"]["close_all_s"] = round(time.perf_counter() - t0, 2)

        results["registry"] = registry_scale(d, args.endpoints, 5000)
        print(f"registry: {results['registry']}", flush=True)
    save("control_plane", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
