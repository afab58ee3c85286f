"""Cross-domain connect time: runs tests/integration/test_interdomain.py (four domains
with trust domains of their own, a floating registry, DNS SRV) --rounds times and reports
the connect times it measured: cold (finding the other domain's registry by the
--domains file, following it, connecting to the endpoint's host) and warm (p50 of five).

    sudo .venv/bin/python bench/interdomain.py [--rounds N]

Writes bench/results/interdomain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchlib import save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs = []
    for _ in range(args.rounds):
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
            env = dict(os.environ, NSMD_FAULT_REPORT=out.name, NSMD_REQUIRE_NETNS="1")
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p",
                                   "no:cacheprovider", "tests/integration/test_interdomain.py"],
                                  cwd=ROOT, env=env)
            if done.returncode != 0:
                print("the inter-domain test failed", file=sys.stderr)
                return 1
            runs += [json.loads(line) for line in out if line.strip()]
    result = {"rounds": args.rounds, "runs": runs,
              "cold_s_median": statistics.median(r["cold_s"] for r in runs),
              "warm_p50_s_median": statistics.median(r["warm_p50_s"] for r in runs)}
    save("interdomain", result)
    print(f"cross-domain connect: cold {result['cold_s_median']} s, warm "
          f"{result['warm_p50_s_median']} s (medians of {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
