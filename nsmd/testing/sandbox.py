"""A test bed of real daemons, namespaces and TUN devices (integration tests, benchmarks).

Daemons run as `python -m nsmd run` subprocesses, each with its own state directory and
API socket; helpers run commands inside namespaces. Nothing here mocks the system.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from nsmd.cli.client import Client, ClientError

READY_TIMEOUT_S = 15.0


def sh(*args: str, check: bool = True, netns: str | None = None,
       timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


class DaemonProc:
    def __init__(self, state_dir: str, name: str):
        self.state_dir = state_dir
        self.name = name
        self.socket = os.path.join(state_dir, "api.sock")
        self.log_path = os.path.join(state_dir, "daemon.log")
        self.proc: subprocess.Popen | None = None
        self.client = Client(self.socket)

    def start(self) -> DaemonProc:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nsmd", "run", "--name", self.name, "--state-dir",
             self.state_dir, "--api-socket", self.socket, "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()}")
            try:
                self.client.call("GET", "/healthz")
                return self
            except ClientError:
                time.sleep(0.05)
        raise AssertionError(f"daemon not ready: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cli(self, *args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
        env = dict(os.environ, NSMD_API_SOCKET=self.socket)
        result = subprocess.run([sys.executable, "-m", "nsmd", *args], capture_output=True,
                                text=True, env=env, input=stdin, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"nsmd {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_json(self, *args: str):
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()[-4000:]


def remove_leftover_devices(d: DaemonProc) -> None:
    db = os.path.join(d.state_dir, "nsmd.db")
    if not os.path.exists(db):
        return
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT doc FROM wires").fetchall()
    for (doc,) in rows:
        wire = json.loads(doc)
        for side in (wire["client"], wire["endpoint"]):
            if side["netns"]:
                subprocess.run(["ip", "netns", "exec", side["netns"], "ip", "link", "delete",
                                side["ifname"]], check=False, capture_output=True)


def endpoint_manifest(name: str, service: str, netns: str, prefix: str = "169.254.0.0/16",
                      labels: str = "{app: icmp-responder}") -> str:
    return f"""
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {{name: {name}}}
spec:
  network_service_names: [{service}]
  network_service_labels: {{{service}: {{labels: {labels}}}}}
  nsmd: {{netns: {netns}, ifname: nsm0, ipam: {{prefix: {prefix}}}}}
"""


def service_manifest(name: str, payload: str = "IP") -> str:
    return f"""
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {{name: {name}}}
spec: {{payload: {payload}}}
"""


def ping(netns: str, address: str, count: int = 3) -> subprocess.CompletedProcess:
    return sh("ping", "-c", str(count), "-i", "0.2", "-W", "2", address, netns=netns,
              check=False)


def link_exists(netns: str, ifname: str) -> bool:
    return sh("ip", "link", "show", ifname, netns=netns, check=False).returncode == 0


def host(cidr: str) -> str:
    return cidr.split("/")[0]
