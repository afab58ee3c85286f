"""Faults and healing, measured: runs the fault-injection tests (tests/integration/
test_faults.py: an endpoint killed under traffic, each daemon killed -9 and restarted, a
lossy slow underlay, the registry's host down, the control plane blocked) and collects
what each measured: time to detect and to heal, outage and pings lost, restart-to-traffic
time. Each test ends with a leak check of its daemons; a failing one fails this run.

    sudo .venv/bin/python bench/faults.py [--rounds N]

--rounds repeats the whole set (a soak) and reports the worst figure of each. Writes
bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchlib import save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORST_IS_MAX = ("detect_s", "heal_s", "outage_s", "pings_lost", "restart_to_traffic_s",
                "restored_after_unblock_s", "transfer_1mib_s", "registry_down_s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    rounds: list[list[dict]] = []
    for n in range(args.rounds):
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
            env = dict(os.environ, NSMD_FAULT_REPORT=out.name, NSMD_REQUIRE_NETNS="1")
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "tests/integration/test_faults.py"], cwd=ROOT, env=env)
            rounds.append([json.loads(line) for line in out if line.strip()])
        if result.returncode != 0:
            print(f"round {n + 1}: a fault test failed", file=sys.stderr)
            return 1
    worst: dict[str, dict] = {}
    for report in (r for one in rounds for r in one):
        into = worst.setdefault(report["scenario"], {})
        for key, value in report.items():
            if key in WORST_IS_MAX and isinstance(value, int | float):
                into[key] = max(into.get(key, value), value)
            elif key != "scenario":
                into.setdefault(key, value)
    results = {"rounds": args.rounds, "worst": worst, "runs": rounds}
    save("faults", results)
    for scenario, figures in worst.items():
        shown = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "impairer")
        print(f"{scenario:<34} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
