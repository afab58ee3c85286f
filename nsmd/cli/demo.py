"""`nsmd demo`: the whole story on one machine, then everything removed again.

A daemon with its own state directory, an endpoint namespace and a client namespace
(names with a per-run prefix), NSM's icmp-responder manifests, a vWire, pings across it,
close, and a check that both interfaces are gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from nsmd.cli.client import Client, ClientError

READY_TIMEOUT_S = 15.0
MANIFEST = """
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {{name: icmp-responder}}
spec: {{payload: IP}}
---
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {{name: icmp-responder-1}}
spec:
  network_service_names: [icmp-responder]
  network_service_labels: {{icmp-responder: {{labels: {{app: icmp-responder}}}}}}
  nsmd: {{netns: {nse}, ifname: nsm0, ipam: {{prefix: 169.254.0.0/16}}}}
"""


def say(text: str) -> None:
    print(f"--- {text}", flush=True)


def run_demo(count: int) -> int:
    import yaml

    if os.geteuid() != 0:
        print("nsmd demo: needs root (network namespaces and TUN devices)", file=sys.stderr)
        return 1
    prefix = f"nsmd-demo-{os.getpid()}"
    nse_ns, nsc_ns = f"{prefix}-nse", f"{prefix}-nsc"
    state = tempfile.mkdtemp(prefix="nsmd-demo-")
    sock = os.path.join(state, "nsmd.sock")
    daemon = None
    made: list[str] = []
    try:
        for ns in (nse_ns, nsc_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        say(f"namespaces {nse_ns} (endpoint) and {nsc_ns} (client) created")
        daemon = subprocess.Popen([sys.executable, "-m", "nsmd", "run", "--name", "demo",
                                   "--state-dir", state, "--api-socket", sock])
        client = Client(sock)
        _wait_ready(client, daemon)
        say(f"daemon running (pid {daemon.pid}, state {state})")
        docs = list(yaml.safe_load_all(MANIFEST.format(nse=nse_ns)))
        for item in client.call("POST", "/v1/apply", {"documents": docs})["applied"]:
            say(f"applied {item['kind']}/{item['name']}")
        conn = client.call("POST", "/v1/connections",
                           {"network_service": "icmp-responder", "netns": nsc_ns})
        params = conn["mechanism"]["parameters"]
        ipc = conn["context"]["ip_context"]
        target = ipc["dst_ip_addrs"][0].split("/")[0]
        say(f"vWire {conn['id']}: {nsc_ns}/{params['name']} {ipc['src_ip_addrs'][0]} <-> "
            f"{nse_ns}/{params['endpoint_name']} {ipc['dst_ip_addrs'][0]}")
        ping = subprocess.run(["ip", "netns", "exec", nsc_ns, "ping", "-c", str(count), "-i",
                               "0.2", "-W", "2", target])
        client.call("DELETE", f"/v1/connections/{conn['id']}")
        left = subprocess.run(["ip", "netns", "exec", nsc_ns, "ip", "-o", "link", "show",
                               params["name"]], capture_output=True)
        say("vWire closed, client interface " +
            ("removed" if left.returncode != 0 else "STILL PRESENT"))
        return 0 if ping.returncode == 0 and left.returncode != 0 else 1
    except (ClientError, subprocess.CalledProcessError) as err:
        print(f"nsmd demo: {err}", file=sys.stderr)
        return 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(state, ignore_errors=True)


def _wait_ready(client: Client, daemon: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise ClientError(f"the daemon exited with status {daemon.returncode}")
        try:
            client.call("GET", "/healthz")
            return
        except ClientError:
            time.sleep(0.1)
    raise ClientError(f"the daemon did not become ready in {READY_TIMEOUT_S:.0f} s")
