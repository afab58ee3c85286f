"""A third-party function plugin, as its author ships it: a package of its own
(tests/plugin_example) with a Cython stage built against nsmd's stage ABI, found through
the nsmd.functions entry point by a daemon started after it was installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nsmd.testing.sandbox import host, ping, service_manifest, sh, wait_until

EXAMPLE = Path(__file__).parent.parent / "plugin_example"
MARKED = """
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {name: marked}
spec:
  network_service_names: [svc]
  nsmd:
    netns: %s
    ipam: {prefix: 169.254.80.0/24}
    functions:
      - {name: marker, config: {dscp: %s}}
      - {name: capture, config: {path: %s}}
"""


@pytest.fixture
def installed_plugin(tmp_path):
    work = tmp_path / "plugin"
    shutil.copytree(EXAMPLE, work)  # builds in a copy: the source tree stays clean
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", str(work)]
    result = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "nsmd-marker"],
                   capture_output=True, timeout=120)


def test_a_plugin_package_runs_its_own_cython_stage(installed_plugin, netns, daemon, tmp_path):
    d = daemon("n1")
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    bad = d.cli("apply", "-f", "-", check=False, stdin=service_manifest("svc") + "---" +
                MARKED % (nse_ns, 99, "c.pcap"))
    assert bad.returncode == 1 and "functions[0].config.dscp: expected a DSCP" in bad.stderr
    d.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
          MARKED % (nse_ns, 46, "c.pcap"))
    conn = d.cli_json("connect", "svc", "--netns", nsc_ns)
    assert ping(nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]), 3).returncode == 0
    segment = conn["path"]["path_segments"][-1]["id"]
    pcap = Path(d.state_dir) / "capture" / f"c-{segment[:8]}.pcap"
    wait_until(lambda: pcap.exists() and pcap.stat().st_size > 200, timeout=3)
    shown = sh("tcpdump", "-n", "-v", "-r", str(pcap)).stdout
    requests = [line for line in shown.splitlines() if "tos" in line]
    assert requests and any("tos 0xb8" in line for line in requests), shown  # DSCP 46 (EF)
    (listed,) = d.cli_json("get", "connections")
    assert int(listed["path"]["path_segments"][-1]["metrics"]["marker.marked"]) >= 3
