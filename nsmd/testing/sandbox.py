"""A test bed of real daemons, namespaces and TUN devices (integration tests, benchmarks).

Daemons run as `python -m nsmd run` subprocesses, each with its own state directory and
API socket; helpers run commands inside namespaces. Nothing here mocks the system.
"""

from __future__ import annotations

import json
import os
import shutil
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


class Namespaces:
    """Network namespaces named <prefix>-<tag> (lo up), all deleted by cleanup()."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.made: list[str] = []

    def make(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "link", "set", "lo", "up", netns=name)
        return name

    def cleanup(self) -> None:
        for name in reversed(self.made):
            # (a test may have deleted it already: that is what some of them test)
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)  # a vL3 vWire's DNS
        self.made = []


class DaemonProc:
    def __init__(self, state_dir: str, name: str, netns: str = "", args: tuple = (),
                 env: dict | None = None, socket: str = "", nsmd: tuple = ()):
        # nsmd: the command that runs nsmd (default: this Python's `-m nsmd`; an installed
        # console script, say), for the daemon and for cli()
        self.nsmd = nsmd or (sys.executable, "-m", "nsmd")
        self.state_dir = state_dir
        self.name = name
        self.netns = netns
        self.args = tuple(args)
        self.env = env or {}
        self.socket = socket or os.path.join(state_dir, "api.sock")
        self.log_path = os.path.join(state_dir, "daemon.log")
        self.proc: subprocess.Popen | None = None
        self.client = Client(self.socket)

    def start(self) -> DaemonProc:
        log = open(self.log_path, "a")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            prefix + [*self.nsmd, "run", "--name", self.name, "--state-dir",
                      self.state_dir, "--api-socket", self.socket, "--log-level", "debug",
                      *self.args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
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
        """Stops the daemon with `sig`; one that does not stop within 10 s is killed and
        the stop fails (a daemon that hangs on SIGTERM is a bug, not a test detail)."""
        hung = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if hung:
            raise AssertionError(f"daemon {self.name} did not stop within 10 s of signal "
                                 f"{sig}: {self.log()[-2000:]}")

    def cli(self, *args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
        env = dict(os.environ, NSMD_API_SOCKET=self.socket)
        result = subprocess.run([*self.nsmd, *args], capture_output=True,
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
        for side in (wire.get("client"), wire.get("endpoint")):
            if side and side["netns"]:
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


VL3_PREFIX = "100.64.0.0/16"
# A vL3 service whose clients use their own node's endpoint (NSM's clientinfo labels).
VL3_SERVICE = """
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: vl3}
spec:
  payload: IP
  matches:
    - source_selector: {}
      routes:
        - destination_selector: {nodeName: "{{.nodeName}}"}
"""


def vl3_endpoint_manifest(name: str, router_ns: str, prefix: str = VL3_PREFIX,
                          length: int = 24) -> str:
    """A vL3 endpoint of service vl3 routing in `router_ns` ("": one the daemon makes)."""
    netns = f"netns: {router_ns}, " if router_ns else ""
    return f"""
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {{name: {name}}}
spec:
  network_service_names: [vl3]
  nsmd: {{{netns}vl3: {{prefix: {prefix}, subnet_prefix_len: {length}}}}}
"""


def ping(netns: str, address: str, count: int = 3) -> subprocess.CompletedProcess:
    return sh("ping", "-c", str(count), "-i", "0.2", "-W", "2", address, netns=netns,
              check=False)


def link_exists(netns: str, ifname: str) -> bool:
    return sh("ip", "link", "show", ifname, netns=netns, check=False).returncode == 0


def host(cidr: str) -> str:
    return cidr.split("/")[0]


def underlay(make_netns, nodes: list[str], subnet: str = "192.0.2") -> dict[str, str]:
    """Node namespaces on one bridge (in its own namespace): {node namespace: its IP}.

    make_netns(tag) must create a namespace and clean it up (the tests' fixture).
    """
    bridge = make_netns("br")
    quiet_ipv6(bridge)
    sh("ip", "link", "add", "br0", "type", "bridge", netns=bridge)
    sh("ip", "link", "set", "br0", "up", netns=bridge)
    addresses = {}
    for i, tag in enumerate(nodes, start=1):
        node = make_netns(tag)
        quiet_ipv6(node)
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", netns=node)
        sh("ip", "link", "set", f"p{i}", "netns", bridge, netns=node)
        sh("ip", "link", "set", f"p{i}", "master", "br0", "up", netns=bridge)
        sh("ip", "addr", "add", f"{subnet}.{i}/24", "dev", "eth0", netns=node)
        sh("ip", "link", "set", "eth0", "up", netns=node)
        addresses[node] = f"{subnet}.{i}"
    return addresses


class Impairer:
    """The userspace netem (impair.py) routing a routed underlay; stopped by its PID."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def stop(self) -> str:
        """Ends it; returns what it counted."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out or ""


def routed_underlay(make_netns, nodes: list[str], loss: float, delay_ms: float,
                    seconds: float = 300, subnet: str = "192.0.2",
                    ) -> tuple[dict[str, str], Impairer]:
    """Like underlay(), but the nodes hang off a router namespace that passes every packet
    between them through the userspace netem with `loss` percent and `delay_ms`:
    ({node namespace: its IP}, the impairer, which the caller must stop())."""
    wan = make_netns("wan")
    quiet_ipv6(wan)
    for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0"):
        sh("sysctl", "-qw", key, netns=wan)
    sh("ip", "addr", "add", f"{subnet}.254/32", "dev", "lo", netns=wan)
    addresses = {}
    for i, tag in enumerate(nodes, start=1):
        node = make_netns(tag)
        quiet_ipv6(node)
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"w{i}", netns=node)
        sh("ip", "link", "set", f"w{i}", "netns", wan, netns=node)
        sh("ip", "addr", "add", f"{subnet}.{i}/24", "dev", "eth0", netns=node)
        sh("ip", "link", "set", "eth0", "up", netns=node)
        sh("ip", "link", "set", f"w{i}", "up", netns=wan)
        sh("sysctl", "-qw", f"net.ipv4.conf.w{i}.proxy_arp=1", netns=wan)
        sh("ip", "route", "add", f"{subnet}.{i}/32", "dev", f"w{i}", netns=wan)
        # what comes in from a node goes to the impairer; what it writes back is routed
        sh("ip", "rule", "add", "iif", f"w{i}", "lookup", "100", "pref", "100", netns=wan)
        addresses[node] = f"{subnet}.{i}"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", wan, sys.executable, "-m", "nsmd.testing.impair", "imp0",
         "--loss", str(loss), "--delay-ms", str(delay_ms), "--seconds", str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    impairer = Impairer(proc)
    try:
        wait_until(lambda: link_exists(wan, "imp0") and "UP" in sh(
            "ip", "-o", "link", "show", "imp0", netns=wan).stdout, timeout=10)
        sh("ip", "route", "add", "default", "dev", "imp0", "table", "100", netns=wan)
    except BaseException:
        impairer.stop()
        raise
    return addresses, impairer


def quiet_ipv6(netns: str) -> None:
    """No IPv6 on an IPv4 test underlay: its neighbour discovery would only be noise."""
    for key in ("all", "default"):
        sh("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1", netns=netns)


def trust_domain(base: str, domain: str, ids: list[str]) -> dict[str, str]:
    """A development CA under base/ca-state and an SVID directory per SPIFFE ID."""
    from nsmd.identity.ca import init_ca, issue_svid

    state = os.path.join(base, f"ca-{domain}")
    if not os.path.exists(os.path.join(state, "ca")):
        init_ca(state, domain)
    return {sid: issue_svid(state, sid, os.path.join(base, "svid-" + sid.rsplit("/", 1)[-1]))
            for sid in ids}


class Pinger:
    """ping in the background, every `interval` s for at most `seconds`: which probes were
    answered and when (wall clock, as time.time())."""

    def __init__(self, netns: str, target: str, interval: float = 0.1, seconds: float = 60):
        self.interval = interval
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "ping", "-D", "-n", "-i", str(interval), "-W", "1",
             "-w", str(seconds), target], stdout=subprocess.PIPE, text=True)
        self.replies: list[float] = []
        self.sent = 0

    def stop(self) -> Pinger:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out = self.proc.communicate(timeout=10)[0]
        for line in out.splitlines():
            if "bytes from" in line and line.startswith("["):
                self.replies.append(float(line[1:line.index("]")]))
            elif "packets transmitted" in line:
                self.sent = int(line.split()[0])
        return self

    @property
    def lost(self) -> int:
        return self.sent - len(self.replies)

    def first_reply_after(self, when: float) -> float | None:
        """Seconds from `when` to the first answered probe after it (None: none was)."""
        later = [t for t in self.replies if t > when]
        return min(later) - when if later else None

    def longest_gap(self) -> float:
        """The longest time without an answer, in seconds."""
        gaps = [b - a for a, b in zip(self.replies, self.replies[1:], strict=False)]
        return max(gaps, default=0.0)


def ping_report(out: str) -> str:
    """ping's statistics and the sequence numbers that got no answer: a failure message
    short enough to read (ping's own output is one line per probe)."""
    answered = {int(word[9:]) for word in out.split() if word.startswith("icmp_seq=")}
    sent = max(answered, default=0)
    for line in out.splitlines():
        if "packets transmitted" in line:
            sent = int(line.split()[0])
    missing = [seq for seq in range(1, sent + 1) if seq not in answered]
    stats = out[out.find("---"):] if "---" in out else out[-500:]
    return f"unanswered icmp_seq {missing}; {stats.strip()}"


def tcp_transfer(server_ns: str, client_ns: str, target: str, size: int,
                 port: int = 5201) -> bool:
    """Sends `size` random bytes over TCP from client_ns to a server in server_ns; True if
    the server received exactly them (length and SHA-256)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c",
         f"import socket,hashlib;s=socket.create_server(('0.0.0.0',{port}));c,_=s.accept();"
         "h=hashlib.sha256();n=0\n"
         "while (b:=c.recv(65536)):h.update(b);n+=len(b)\n"
         "print(n,h.hexdigest())"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        sent = sh(sys.executable, "-c",
                  f"import socket,hashlib,os;d=os.urandom({size});"
                  f"s=socket.create_connection(('{target}',{port}),timeout=20);s.sendall(d);"
                  "s.close();print(len(d),hashlib.sha256(d).hexdigest())",
                  netns=client_ns, timeout=60).stdout.split()
        received = server.communicate(timeout=60)[0].split()
    finally:
        server.kill()
    return received == sent and sent[0] == str(size)


def eventually(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Polls `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def wait_briefly(predicate, timeout: float = 3.0) -> bool:
    """`eventually` at a fine grain, for in-process engines that settle in milliseconds."""
    return eventually(predicate, timeout, interval=0.005)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1) -> None:
    """Polls `predicate` until it holds; AssertionError after `timeout` seconds."""
    if not eventually(predicate, timeout, interval):
        raise AssertionError("condition not met in time")



class EtcdServer:
    """An etcd of the test's own (Debian's etcd-server), on `ip` (loopback or inside a test
    namespace), with its data in `data_dir` so a restart keeps it. Stopped by its PID."""

    def __init__(self, data_dir: str, ip: str = "127.0.0.1", netns: str = "",
                 client_port: int = 0, peer_port: int = 0,
                 tls: tuple[str, str, str] | None = None,
                 ctl: tuple[str, str, str] | None = None):
        self.data_dir, self.ip, self.netns = data_dir, ip, netns
        self.tls = tls  # (clients' CA, server certificate, key): clients must present one
        self.ctl = ctl or tls  # etcdctl's (server CA, certificate, key)
        self.client_port = client_port or _free_port(ip, netns)
        self.peer_port = peer_port or _free_port(ip, netns, exclude=self.client_port)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"etcd://{self.ip}:{self.client_port}"

    def start(self) -> EtcdServer:
        scheme = "https" if self.tls else "http"
        client = f"{scheme}://{self.ip}:{self.client_port}"
        peer = f"http://{self.ip}:{self.peer_port}"
        cmd = ["etcd", "--name", "t", "--data-dir", self.data_dir,
               "--listen-client-urls", client, "--advertise-client-urls", client,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"t={peer}", "--log-level", "error",
               "--logger", "zap"]
        if self.tls:
            cmd += ["--trusted-ca-file", self.tls[0], "--cert-file", self.tls[1],
                    "--key-file", self.tls[2], "--client-cert-auth"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.log = open(self.data_dir + ".log", "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._healthy, timeout=20, interval=0.1)
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"etcd exited: {open(self.data_dir + '.log').read()[-2000:]}")
        done = subprocess.run(
            ([*(["ip", "netns", "exec", self.netns] if self.netns else [])] +
             ["etcdctl", "--endpoints", f"{self.ip}:{self.client_port}", *self._auth(),
              "endpoint", "health"]), capture_output=True, text=True,
            env=dict(os.environ, ETCDCTL_API="3"))
        return done.returncode == 0

    def _auth(self) -> list[str]:
        """etcdctl's TLS options (the server's certificate serves as a client one too)."""
        if not self.ctl:
            return []
        return ["--cacert", self.ctl[0], "--cert", self.ctl[1], "--key", self.ctl[2]]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def compact(self) -> None:
        """Compacts history to the current revision (so older watches cannot resume)."""
        env = dict(os.environ, ETCDCTL_API="3")
        ep = ["--endpoints", f"{self.ip}:{self.client_port}", *self._auth()]
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        status = subprocess.run([*prefix, "etcdctl", *ep, "endpoint", "status", "-w", "json"],
                                capture_output=True, text=True, env=env, check=True)
        revision = json.loads(status.stdout)[0]["Status"]["header"]["revision"]
        subprocess.run([*prefix, "etcdctl", *ep, "compaction", str(revision)],
                       capture_output=True, env=env, check=True)


def _free_port(ip: str, netns: str, exclude: int = 0) -> int:
    """A TCP port free on `ip` (in the host's namespace: asked of the kernel; inside a
    test's own namespace everything is free)."""
    if netns:
        return 2379 if exclude != 2379 else 2380
    import socket as _socket
    while True:
        with _socket.socket() as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        if port != exclude:
            return port
