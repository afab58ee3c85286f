"""`nsmd demo` (what `scripts/demo` runs for a newcomer): one vWire named by one id in
everything it prints, the daemon's log included, and nothing left behind."""

from __future__ import annotations

import re
import subprocess
import sys

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_the_demo_names_its_one_vwire_once_and_cleans_up():
    proc = subprocess.Popen([sys.executable, "-m", "nsmd", "demo", "--count", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    ids = set(UUID.findall(out))
    assert len(ids) == 1, out        # the summary, the client's and the daemon's lines
    (vwire,) = ids
    assert re.search(rf"INFO nsmd\.dataplane: vWire {vwire} up:", out), out
    assert re.search(rf"INFO nsmd\.dataplane: vWire {vwire} removed", out), out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"--- passed: vWire {vwire} ") and "2/2 pings" in last, last
    assert last.endswith("daemon, namespaces and state removed"), last
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"nsmd-demo-{proc.pid}" not in left
