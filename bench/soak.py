"""Soak: many connect/close cycles and daemon restarts, then a check that nothing leaked.

Bounded in count and time (--cycles, --max-seconds). After the cycles it verifies that the
daemon's open fds and the namespaces' interfaces are back to their starting point, no
connection or address lease is left, and reports the daemon's RSS growth. Exit status 1
if anything leaked. Namespaces: nsmdb-<random>-*, removed on exit.

    sudo .venv/bin/python bench/soak.py [--cycles 2000] [--restart-every 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time

from benchlib import one_host, rss_kib, save

from nsmd.testing.sandbox import sh


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def links(netns: str) -> list[str]:
    out = sh("ip", "-o", "link", netns=netns).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--restart-every", type=int, default=500)
    ap.add_argument("--max-seconds", type=float, default=900)
    args = ap.parse_args()
    leaks: list[str] = []
    with one_host("soak", "100.64.0.0/16") as (d, nse, nsc):
        d.client.call("DELETE", "/v1/connections/" + d.client.call(
            "POST", "/v1/connections", {"network_service": "soak", "netns": nsc})["id"])
        base_fds, base_rss = fds(d.proc.pid), rss_kib(d.proc.pid)
        base_links = (links(nse), links(nsc))
        started = time.monotonic()
        done = 0
        while done < args.cycles and time.monotonic() - started < args.max_seconds:
            conn = d.client.call("POST", "/v1/connections",
                                 {"network_service": "soak", "netns": nsc})
            d.client.call("DELETE", f"/v1/connections/{conn['id']}")
            done += 1
            if args.restart_every and done % args.restart_every == 0:
                kept = d.client.call("POST", "/v1/connections",
                                     {"network_service": "soak", "netns": nsc})
                d.stop()
                d.start()
                d.client.call("DELETE", f"/v1/connections/{kept['id']}")
                base_fds = fds(d.proc.pid)  # a new process: compare with its own start
        elapsed = time.monotonic() - started
        time.sleep(1)
        result = {"cycles": done, "seconds": round(elapsed, 1),
                  "cycles_per_s": round(done / elapsed, 1),
                  "fds": [base_fds, fds(d.proc.pid)],
                  "rss_kib": [base_rss, rss_kib(d.proc.pid)],
                  "connections_left": len(d.client.call("GET", "/v1/connections"))}
        with sqlite3.connect(os.path.join(d.state_dir, "nsmd.db")) as db:
            result["leases_left"] = db.execute("SELECT COUNT(*) FROM ipam").fetchone()[0]
            result["wires_left"] = db.execute("SELECT COUNT(*) FROM wires").fetchone()[0]
        if result["fds"][1] > result["fds"][0]:
            leaks.append(f"fds {result['fds']}")
        if (links(nse), links(nsc)) != base_links:
            leaks.append(f"interfaces left: {links(nse)} / {links(nsc)}")
        for key in ("connections_left", "leases_left", "wires_left"):
            if result[key]:
                leaks.append(f"{key} = {result[key]}")
        result["leaks"] = leaks
        print(json.dumps(result, indent=2))
    save("soak", result)
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
