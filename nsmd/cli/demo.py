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
    outcome = ""
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
                               "0.2", "-W", "2", "-q", target], capture_output=True, text=True)
        answered = _answered(ping.stdout)
        say(f"ping {target} from {nsc_ns}: {answered}/{count} answered")
        client.call("DELETE", f"/v1/connections/{conn['id']}")
        left = subprocess.run(["ip", "netns", "exec", nsc_ns, "ip", "-o", "link", "show",
                               params["name"]], capture_output=True)
        say("vWire closed, client interface " +
            ("removed" if left.returncode != 0 else "STILL PRESENT"))
        if answered == count and left.returncode != 0:
            outcome = (f"vWire {conn['id']} ({nsc_ns} <-> {nse_ns}) carried {answered}/{count} "
                       "pings and closed")
        else:
            print(f"nsmd demo: failed: {answered}/{count} pings answered, client interface "
                  f"{'removed' if left.returncode else 'left behind'}", file=sys.stderr)
    except (ClientError, subprocess.CalledProcessError) as err:
        print(f"nsmd demo: {err}", file=sys.stderr)
    finally:
        leftovers = _clean_up(daemon, made, state)
    if leftovers:
        print(f"nsmd demo: could not remove {', '.join(leftovers)}", file=sys.stderr)
        return 1
    if not outcome:
        return 1
    say(f"passed: {outcome}; daemon, namespaces and state removed")
    return 0


def _answered(ping_output: str) -> int:
    """Replies counted in ping's summary line ('3 packets transmitted, 3 received, ...')."""
    for line in ping_output.splitlines():
        if " received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def _clean_up(daemon: subprocess.Popen | None, namespaces: list[str], state: str) -> list[str]:
    """Stops the daemon, removes the namespaces and the state; returns what is still there."""
    left = []
    if daemon is not None and daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)
    for ns in namespaces:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        if os.path.exists(f"/run/netns/{ns}"):
            left.append(f"namespace {ns}")
    shutil.rmtree(state, ignore_errors=True)
    if os.path.exists(state):
        left.append(state)
    return left


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
