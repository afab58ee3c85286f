"""Small helpers the benchmark scripts share (results files, process memory, percentiles)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

from nsmd.testing.sandbox import DaemonProc, endpoint_manifest, service_manifest, sh

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def save(name: str, data: dict) -> str:
    """Writes bench/results/<name>.json; returns its path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 2)


def p50_p99(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p99": pct(values, 99)}


def setup_latency_ms(d: DaemonProc, service: str, netns: str, count: int) -> dict[str, float]:
    """Connects and closes `count` vWires one after another; p50/p99 of the connect, in ms."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        conn = d.client.call("POST", "/v1/connections",
                             {"network_service": service, "netns": netns})
        times.append((time.perf_counter() - t0) * 1000)
        d.client.call("DELETE", f"/v1/connections/{conn['id']}")
    return p50_p99(times)


@contextlib.contextmanager
def one_host(service: str, prefix: str) -> Iterator[tuple[DaemonProc, str, str]]:
    """A daemon with its own state, an endpoint namespace hosting `service` (addresses
    from `prefix`) and a client namespace: (daemon, endpoint ns, client ns). Everything
    is stopped and removed on exit; namespaces are named nsmdb-<random>-*."""
    names = [f"nsmdb-{secrets.token_hex(3)}-{tag}" for tag in ("nse", "nsc")]
    made: list[str] = []
    work = tempfile.mkdtemp(prefix="nsmd-bench-")
    d = DaemonProc(os.path.join(work, "d"), service)
    os.makedirs(d.state_dir)
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            made.append(name)
        d.start()
        d.cli("apply", "-f", "-", stdin=service_manifest(service) + "---" +
              endpoint_manifest(f"{service}-1", service, names[0], prefix))
        yield d, names[0], names[1]
    finally:
        d.stop()
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(work, ignore_errors=True)

