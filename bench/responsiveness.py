"""Does the daemon stay responsive under control-plane load?

One daemon; 100,000 endpoints applied to it in batches of 5,000 (half with a workload
namespace, half in the daemon's own), all hosted, so the daemon re-registers each at 2/3
of the expiry period. A prober calls GET /v1/status every 50 ms the whole time and
records how long each answer took: while the batches go in, then through the
re-registration waves. At the end the daemon gets SIGTERM: how long it takes to exit.

    sudo .venv/bin/python bench/responsiveness.py [--endpoints N] [--watch-s S]

Goals (issue 9): every API call answered within 1 s under any of this load (p99 well
under that), and shutdown within 2 s. Writes bench/results/responsiveness.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
import time

from benchlib import one_host, pct, rss_kib, save

GOAL_API_MAX_S = 1.0
GOAL_SHUTDOWN_S = 2.0


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("nsmd", timeout=120)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Prober(threading.Thread):
    """GET /v1/status every `interval` s; remembers (phase, milliseconds) per answer."""

    def __init__(self, sock: str, interval: float = 0.05):
        super().__init__(daemon=True)
        self.sock = sock
        self.interval = interval
        self.phase = "idle"
        self.samples: list[tuple[str, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            t0 = time.perf_counter()
            conn = UnixHTTP(self.sock)
            try:
                conn.request("GET", "/v1/status")
                conn.getresponse().read()
            except OSError:
                if self.done.is_set():
                    return
                raise
            finally:
                conn.close()
            self.samples.append((self.phase, (time.perf_counter() - t0) * 1000))
            self.done.wait(self.interval)

    def summary(self) -> dict:
        out = {}
        for phase in dict.fromkeys(p for p, _ in self.samples):
            values = [s for p, s in self.samples if p == phase]
            out[phase] = {"calls": len(values), "p50_ms": pct(values, 50),
                          "p99_ms": pct(values, 99), "max_ms": round(max(values), 2)}
        return out


def documents(first: int, count: int, netns: str) -> list[dict]:
    docs = []
    for i in range(first, first + count):
        service = f"svc-{i % 1000}"
        spec = {"network_service_names": [service],
                "network_service_labels": {service: {"labels": {"zone": f"z{i % 7}"}}}}
        if i % 2 == 0:  # the others are in the daemon's own namespace
            spec["nsmd"] = {"netns": netns, "ipam": {"prefix": "100.64.0.0/16"}}
        docs.append({"apiVersion": "networkservicemesh.io/v1",
                     "kind": "NetworkServiceEndpoint", "metadata": {"name": f"r-{i}"},
                     "spec": spec})
    return docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--watch-s", type=float, default=75.0,
                    help="how long to watch after applying (re-registration, expiry)")
    args = ap.parse_args()
    results: dict = {"endpoints": args.endpoints}
    with one_host("bench", "100.64.0.0/10") as (d, nse_ns, _):
        prober = Prober(d.socket)
        prober.start()
        time.sleep(1)
        prober.phase = "apply"
        started = time.perf_counter()
        for first in range(0, args.endpoints, args.batch):
            count = min(args.batch, args.endpoints - first)
            conn = UnixHTTP(d.socket)
            conn.request("POST", "/v1/apply", json.dumps({"documents": documents(
                first, count, nse_ns)}), {"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status != 200:
                raise RuntimeError(f"apply: {response.status} {body[:200]!r}")
        results["apply_per_s"] = round(args.endpoints / (time.perf_counter() - started))
        prober.phase = "after apply (re-registration, expiry)"
        time.sleep(args.watch_s)
        prober.phase = "done"
        results["daemon_rss_mib"] = round(rss_kib(d.proc.pid) / 1024, 1)
        status = d.client.call("GET", "/v1/status")
        results["registered_at_end"] = status["endpoints"]
        prober.done.set()
        prober.join(10)
        results["api_latency"] = prober.summary()
        assert d.proc is not None
        t0 = time.perf_counter()
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(60)
        results["shutdown_s"] = round(time.perf_counter() - t0, 2)
        d.proc = None
    worst = max(v["max_ms"] for v in results["api_latency"].values()) / 1000
    results["goals"] = {
        "api_max_s": [round(worst, 3), GOAL_API_MAX_S, worst <= GOAL_API_MAX_S],
        "shutdown_s": [results["shutdown_s"], GOAL_SHUTDOWN_S,
                       results["shutdown_s"] <= GOAL_SHUTDOWN_S]}
    save("responsiveness", results)
    print(json.dumps(results, indent=2))
    return 0  # the verdicts are in the results (bench/run.py prints them)


if __name__ == "__main__":
    sys.exit(main())
