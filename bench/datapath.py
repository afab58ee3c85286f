"""Data path: nsmd's vWires against the anchors, all measured in one run.

Two host namespaces joined by a veth (underlay 192.0.2.1 <-> 192.0.2.2). In the same
invocation: plain veth (the limit), classic wireguard-go (Debian 12's), modern
wireguard-go (Debian 13's 0.0.20231211 with TUN offloads, vectorized I/O and UDP
GSO/GRO: the anchor that counts; fetched by ../shared/bench/modern-wireguard-go.sh
without installing anything, or --modern PATH), the hand-written
asyncio tunnel (../shared/bench/naive_tunnel.py, if present), nsmd across hosts (one
daemon per host, client and endpoint in their own namespaces) and nsmd on one host. Each
with iperf3 TCP (1 and 4 streams), 64-byte UDP rate, ping RTT and the tunnel processes'
CPU seconds per GB. Modern wireguard-go and nsmd across hosts are set up side by side
and take turns at the TCP runs (--rounds each; their means are compared). Writes
bench/results/datapath.json and prints a table with ratios.
Needs root; installs wireguard-go, wireguard-tools and iperf3 with apt if missing. Every
namespace is named nsmdb-<random>-* and removed on exit; only processes it started are
stopped, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import save, setup_latency_ms

from nsmd.testing.sandbox import (
    DaemonProc,
    endpoint_manifest,
    host,
    quiet_ipv6,
    service_manifest,
    sh,
    trust_domain,
)

UA, UB = "192.0.2.1", "192.0.2.2"
OA, OB = "100.64.0.1", "100.64.0.2"
PORT = 5201
WG_PORT = 41820  # not nsmd's tunnel ports (51820 up): both run side by side


def need_tools(perf: bool = False) -> None:
    tools = [("wireguard-go", "wireguard-go"), ("wg", "wireguard-tools"), ("iperf3", "iperf3")]
    missing = [pkg for tool, pkg in tools + ([("perf", "linux-perf")] if perf else [])
               if shutil.which(tool) is None]
    if missing:
        print(f"installing {' '.join(missing)}", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, in ticks
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def iperf(client_ns, server_ns, target, seconds, streams, pids) -> dict:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p",
                               str(PORT)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        cpu0 = cpu_seconds(pids)
        out = sh("iperf3", "-c", target, "-p", str(PORT), "-t", str(seconds), "-P",
                 str(streams), "-J", netns=client_ns, timeout=seconds + 30).stdout
        cpu = cpu_seconds(pids) - cpu0
    finally:
        server.wait(10)
    end = json.loads(out)["end"]
    received = end["sum_received"]
    gbytes = received["bytes"] / 1e9
    return {"gbps": round(received["bits_per_second"] / 1e9, 3),
            "seconds": round(received["seconds"], 2),
            "retransmits": end["sum_sent"].get("retransmits", 0),
            "cpu_s_per_gb": round(cpu / gbytes, 2) if pids and gbytes else None}


def mean_run(runs: list[dict]) -> dict:
    """One iperf result from several: mean rate and CPU per GB, retransmits summed."""
    cpu = [r["cpu_s_per_gb"] for r in runs if r["cpu_s_per_gb"] is not None]
    return {"gbps": round(statistics.fmean(r["gbps"] for r in runs), 3),
            "seconds": round(sum(r["seconds"] for r in runs), 2),
            "retransmits": sum(r["retransmits"] for r in runs),
            "cpu_s_per_gb": round(statistics.fmean(cpu), 2) if cpu else None}


def interleaved_tcp(paths: dict[str, tuple], seconds: int, rounds: int) -> dict[str, dict]:
    """TCP with 1 and with 4 streams over each path (client ns, server ns, target, pids),
    `rounds` times, the paths taking turns: this VM drifts between two back-to-back runs
    by as much as the differences measured, and turns spread the drift over both. Per
    path the means ("tcp1", "tcp4") and each round ("tcp1_rounds", "tcp4_rounds")."""
    runs: dict[str, dict[str, list]] = {name: {"tcp1": [], "tcp4": []} for name in paths}
    for streams in (1, 4):
        for k in range(rounds):
            for name, (client_ns, server_ns, target, pids) in paths.items():
                run = iperf(client_ns, server_ns, target, seconds, streams, pids)
                print(f"    {name}, TCP {streams} stream(s), round {k + 1}: {run}", flush=True)
                runs[name][f"tcp{streams}"].append(run)
    return {name: {"tcp1": mean_run(r["tcp1"]), "tcp1_rounds": r["tcp1"],
                   "tcp4": mean_run(r["tcp4"]), "tcp4_rounds": r["tcp4"]}
            for name, r in runs.items()}


def udp_pps(client_ns, server_ns, target, seconds) -> dict:
    """64-byte UDP payloads delivered per second under an unlimited iperf3 flood
    ("pps"), with how many the client sent and how many were lost on the way."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p",
                               str(PORT)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh("iperf3", "-c", target, "-p", str(PORT), "-u", "-l", "64", "-b", "0", "-t",
                 str(seconds), "-J", netns=client_ns, timeout=seconds + 30).stdout
    finally:
        server.wait(10)
    total = json.loads(out)["end"]["sum"]
    return {"pps": round((total["packets"] - total["lost_packets"]) / total["seconds"]),
            "sent": total["packets"], "lost": total["lost_packets"],
            "seconds": total["seconds"]}


def udp_rcvbuf_errors(netns: str) -> int:
    """Datagrams the kernel dropped in `netns` because a UDP socket's buffer was full
    (/proc/net/snmp's Udp RcvbufErrors)."""
    lines = [line.split() for line in sh("cat", "/proc/net/snmp", netns=netns).stdout
             .splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["RcvbufErrors"])


def rtt(netns, target, count) -> dict:
    out = sh("ping", "-c", str(count), "-i", "0.005", "-W", "1", target, netns=netns,
             timeout=count * 0.1 + 30).stdout
    times = sorted(float(t.split("=")[1]) * 1000 for t in out.split() if t.startswith("time="))
    pick = lambda pct: round(times[min(len(times) - 1, int(pct / 100 * len(times)))], 1)  # noqa
    return {"p50_us": pick(50), "p99_us": pick(99), "avg_us": round(statistics.fmean(times), 1)}


SYSCALLS = ("read", "write", "sendmsg", "sendmmsg", "recvmmsg", "epoll_wait")


def profile(out_dir: str, pids: dict[str, int], load) -> None:
    """perf call-graph profiles of `pids` while `load()` runs, each with a flat report, and
    their system calls per unit of work (`load()` returns {"units": n, "unit": name, ...})."""
    os.makedirs(out_dir, exist_ok=True)
    recorders = {name: subprocess.Popen(
        ["perf", "record", "-q", "-g", "-F", "999", "-p", str(pid), "-o",
         os.path.join(out_dir, f"{name}.data")], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for name, pid in pids.items()}
    events = ",".join(f"syscalls:sys_enter_{call}" for call in SYSCALLS)
    counters = {name: subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "-o",
         os.path.join(out_dir, f"{name}.stat")], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for name, pid in pids.items()}
    try:
        time.sleep(0.5)
        result = load()
        print(f"    profiled run: {result}", flush=True)
    finally:
        for proc in [*recorders.values(), *counters.values()]:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    for name in pids:
        data = os.path.join(out_dir, f"{name}.data")
        with open(os.path.join(out_dir, f"{name}.txt"), "w") as report:
            subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                            "--percent-limit", "0.5", "-g", "none"], stdout=report,
                           stderr=subprocess.DEVNULL, check=False)
        with open(os.path.join(out_dir, f"{name}.stat")) as f:
            counts = {line.split(",")[2].split("sys_enter_")[1]: int(line.split(",")[0])
                      for line in f if "sys_enter_" in line and line[0].isdigit()}
        per_unit = {call: round(n / result["units"], 2) for call, n in counts.items() if n}
        print(f"    perf: {data} ({name}.txt); syscalls per {result['unit']}: {per_unit}",
              flush=True)


def measure(name, client_ns, server_ns, target, pids, args, tunnel_ns=None,
            tcp: dict | None = None) -> dict:
    """RTT, TCP 1 and 4 streams (or `tcp`: measured already, interleaved_tcp), the 64-byte
    UDP rate; for the UDP flood also where its losses were: full socket buffers at the
    iperf3 server's netns and, when the receiving tunnel's socket lives in another one
    (`tunnel_ns`), there.

    "udp64_pps" is what reached the iperf3 server's application; "udp64_tunnel_pps" what
    the tunnel delivered into the server's netns (that, plus what the kernel dropped
    there because the server's socket was full). A single-threaded iperf3 server reading
    one datagram per call on this 2-core machine drains less than a fast tunnel brings:
    the first measures iperf3, the second the tunnel. Where the tunnel's own socket is in
    the server's netns (wireguard-go), its drops count as delivered: that favours it."""
    print(f"--- {name}", flush=True)
    result = {"rtt": rtt(client_ns, target, args.pings)}
    if tcp is not None:
        result.update(tcp)
    else:
        result["tcp1"] = iperf(client_ns, server_ns, target, args.seconds, 1, pids)
        result["tcp4"] = iperf(client_ns, server_ns, target, args.seconds, 4, pids)
    watched = [ns for ns in (server_ns, tunnel_ns) if ns]
    before = [udp_rcvbuf_errors(ns) for ns in watched]
    udp = udp_pps(client_ns, server_ns, target, args.seconds)
    full = [udp_rcvbuf_errors(ns) - b for ns, b in zip(watched, before, strict=True)]
    result["udp64_pps"] = udp["pps"]
    result["udp64_tunnel_pps"] = round((udp["sent"] - udp["lost"] + full[0]) / udp["seconds"])
    result["udp64_loss"] = {"sent": udp["sent"], "lost": udp["lost"],
                            "server_netns_rcvbuf_full": full[0],
                            "tunnel_netns_rcvbuf_full": full[1] if tunnel_ns else None}
    print(f"    {json.dumps(result)}", flush=True)
    return result


class Bed:
    def __init__(self):
        self.prefix = f"nsmdb-{secrets.token_hex(3)}"
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.work = tempfile.mkdtemp(prefix="nsmd-bench-")

    def netns(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"
        sh("ip", "netns", "add", name)
        self.made.append(name)
        quiet_ipv6(name)
        sh("ip", "link", "set", "lo", "up", netns=name)
        return name

    def start(self, netns: str, *cmd: str, env: dict | None = None) -> subprocess.Popen:
        log = open(os.path.join(self.work, f"{len(self.procs)}.log"), "w")
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *cmd], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "delete", name], check=False)
            # a vL3 vWire's DNS outlives a stopped daemon (the vWire does): ours to remove
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


MODERN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                             "shared", "bench", "modern-wireguard-go.sh")


def modern_wireguard_go(path: str) -> str | None:
    """The modern wireguard-go binary: `path`, or fetched by the anchors' script."""
    if path:
        return path if os.access(path, os.X_OK) else None
    if not os.path.exists(MODERN_SCRIPT):
        return None
    done = subprocess.run(["bash", MODERN_SCRIPT], capture_output=True, text=True)
    found = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout else ""
    if not found or not os.access(found, os.X_OK):
        print(f"--- modern wireguard-go not fetched: {done.stderr.strip()[-300:]}", flush=True)
        return None
    return found


def run_wireguard_go(bed: Bed, a: str, b: str, args, binary: str = "wireguard-go",
                     label: str = "wireguard-go") -> dict:
    with wireguard_go(bed, a, b, binary) as pids:
        return measure(label, a, b, OB, pids, args)


@contextlib.contextmanager
def wireguard_go(bed: Bed, a: str, b: str, binary: str = "wireguard-go"):
    """A wireguard-go tunnel between the host namespaces, OA in a to OB in b: yields the
    PIDs of its two processes."""
    keys = {}
    for side in "ab":
        private = sh("wg", "genkey").stdout.strip()
        keys[side] = (private, subprocess.run(["wg", "pubkey"], input=private, text=True,
                                              capture_output=True, check=True).stdout.strip())
    ifname = {s: f"{bed.prefix[-6:]}wg{s}" for s in "ab"}
    procs = {s: bed.start(ns, binary, "-f", ifname[s],
                          env={"WG_PROCESS_FOREGROUND": "1"}) for s, ns in (("a", a), ("b", b))}
    for s in "ab":
        sock = f"/var/run/wireguard/{ifname[s]}.sock"
        deadline = time.monotonic() + 5
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
    for s, ns, peer, peer_ip, mine in (("a", a, "b", UB, OA), ("b", b, "a", UA, OB)):
        keyfile = os.path.join(bed.work, f"{s}.key")
        with open(keyfile, "w") as f:
            f.write(keys[s][0])
        sh("wg", "set", ifname[s], "private-key", keyfile, "listen-port", str(WG_PORT), "peer",
           keys[peer][1], "endpoint", f"{peer_ip}:{WG_PORT}", "allowed-ips",
           f"{OB if s == 'a' else OA}/32", netns=ns)
        sh("ip", "addr", "add", f"{mine}/24", "dev", ifname[s], netns=ns)
        sh("ip", "link", "set", ifname[s], "mtu", "1420", "up", netns=ns)
    try:
        yield [p.pid for p in procs.values()]
    finally:
        for proc in procs.values():
            bed.stop(proc)
        for s, ns in (("a", a), ("b", b)):
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "delete", ifname[s]],
                           check=False, capture_output=True)


NAIVE_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "bench", "naive_tunnel.py")


def run_naive(bed: Bed, a: str, b: str, args) -> dict | None:
    """The hand-written asyncio TUN/UDP tunnel with ChaCha20-Poly1305 (the anchors' script)."""
    if not os.path.exists(args.naive):
        print(f"--- naive tunnel skipped: {args.naive} not found (--naive PATH)", flush=True)
        return None
    key = secrets.token_hex(32)
    procs = []
    for role, ns, mine, me, peer in (("a", a, OA, UA, UB), ("b", b, OB, UB, UA)):
        procs.append(bed.start(ns, sys.executable, args.naive, "--tun", f"nt{role}",
                               "--addr", f"{mine}/24", "--mtu", "1420", "--listen",
                               f"{me}:40000", "--peer", f"{peer}:40000", "--role", role,
                               "--crypto", "chacha20poly1305", "--key-hex", key))
    time.sleep(1.5)
    try:
        return measure("naive asyncio tunnel", a, b, OB, [p.pid for p in procs], args)
    finally:
        for proc in procs:
            bed.stop(proc)


def parallel_vwires(bed: Bed, near: DaemonProc, nsc: str, nse: str, args) -> dict:
    """Two vWires at once (they land on different engines, so on different cores): TCP
    one stream each, summed."""
    second = bed.netns("nsc2")
    conn = near.cli_json("connect", "bench", "--netns", second)
    target2 = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    (first,) = [c for c in near.cli_json("get", "connections") if c["id"] != conn["id"]]
    target1 = host(first["context"]["ip_context"]["dst_ip_addrs"][0])
    servers = [bed.start(nse, "iperf3", "-s", "-1", "-p", str(PORT + i)) for i in (1, 2)]
    time.sleep(0.3)
    clients = [subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-c", target, "-p",
                                 str(PORT + i), "-t", str(args.seconds), "-J"],
                                stdout=subprocess.PIPE, text=True)
               for i, ns, target in ((1, nsc, target1), (2, second, target2))]
    totals = [json.loads(c.communicate(timeout=args.seconds + 30)[0])["end"]["sum_received"]
              ["bits_per_second"] / 1e9 for c in clients]
    for server in servers:
        server.wait(10)
    near.cli("close", conn["id"])
    print(f"    two vWires in parallel: {[round(t, 3) for t in totals]} Gbit/s", flush=True)
    return {"gbps": round(sum(totals), 3), "each": [round(t, 3) for t in totals]}


@dataclasses.dataclass
class NsmdHosts:
    near: DaemonProc
    far: DaemonProc
    nsc: str
    nse: str
    target: str
    setup_ms: dict

    @property
    def pids(self) -> list[int]:
        return [self.near.proc.pid, self.far.proc.pid]


@contextlib.contextmanager
def nsmd_hosts(bed: Bed, a: str, b: str, args):
    """A daemon per host namespace, an endpoint in nse behind the far one, and one vWire
    for a client in nsc from the near one (after args.connects timed setups)."""
    ids = trust_domain(bed.work, "bench.nsmd", ["spiffe://bench.nsmd/a", "spiffe://bench.nsmd/b"])
    near = DaemonProc(os.path.join(bed.work, "a"), "a", a, (
        "--listen", f"{UA}:7000", "--identity-dir", ids["spiffe://bench.nsmd/a"]))
    far = DaemonProc(os.path.join(bed.work, "b"), "b", b, (
        "--listen", f"{UB}:7000", "--registry", f"https://{UA}:7000", "--identity-dir",
        ids["spiffe://bench.nsmd/b"]))
    for d in (near, far):
        os.makedirs(d.state_dir)
        d.start()
    try:
        nse, nsc = bed.netns("nse"), bed.netns("nsc")
        far.cli("apply", "-f", "-", stdin=service_manifest("bench") + "---" +
                endpoint_manifest("bench-1", "bench", nse, "100.64.90.0/24"))
        deadline = time.monotonic() + 10
        while not near.cli_json("get", "endpoints") and time.monotonic() < deadline:
            time.sleep(0.1)
        setup_ms = setup_latency_ms(near, "bench", nsc, args.connects)
        conn = near.cli_json("connect", "bench", "--netns", nsc)
        yield NsmdHosts(near, far, nsc, nse,
                        host(conn["context"]["ip_context"]["dst_ip_addrs"][0]), setup_ms)
    finally:
        near.stop()
        far.stop()


def run_nsmd(bed: Bed, b: str, args, hosts: NsmdHosts, tcp: dict | None = None) -> dict:
    """nsmd across hosts (the far one's tunnel socket in `b`), then on one host. `tcp`:
    its TCP runs, measured already (interleaved_tcp)."""
    near, nsc, nse, target = hosts.near, hosts.nsc, hosts.nse, hosts.target
    if args.perf:
        pids = {"near": near.proc.pid, "far": hosts.far.proc.pid}

        def tcp_load():
            run = iperf(nsc, nse, target, args.seconds, 1, [])
            return {**run, "units": run["gbps"] * 1e3 / 8 * run["seconds"], "unit": "MB"}

        def udp64_load():
            pps = udp_pps(nsc, nse, target, args.seconds)["pps"]
            return {"pps": pps, "units": pps * args.seconds, "unit": "packet"}

        profile(os.path.join(args.perf, "tcp"), pids, tcp_load)
        profile(os.path.join(args.perf, "udp64"), pids, udp64_load)
    result = measure("nsmd cross-host", nsc, nse, target, hosts.pids, args, tunnel_ns=b,
                     tcp=tcp)
    result["setup_ms"] = hosts.setup_ms
    result["tcp_2_vwires"] = parallel_vwires(bed, near, nsc, nse, args)
    (conn,) = near.cli_json("get", "connections")
    near.cli("close", conn["id"])
    # the same host: an endpoint next to the client, both served by one daemon
    local_nse = bed.netns("nse-local")
    near.cli("apply", "-f", "-", stdin=service_manifest("local") + "---" +
             endpoint_manifest("local-1", "local", local_nse, "100.64.91.0/24"))
    conn = near.cli_json("connect", "local", "--netns", nsc)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    same = measure("nsmd same host", nsc, local_nse, target, [near.proc.pid], args)
    return {"cross_host": result, "same_host": same}


def crypto_rates(count: int = 200_000) -> dict:
    """Each AEAD on one core the engine's way (per datagram: nonce, header as AAD,
    payload, tag), sealing and opening at a full segment's size and at 64 bytes, against
    `openssl speed`'s bulk rate (same cipher and size, no per-message set-up). The crypto
    floor is what sealing and opening alone cost per GB of full segments: what no
    change outside the cipher can take off nsmd's CPU per GB. The top level is the AEAD
    the daemons agreed on ("auto" on this CPU), `by_aead` has both."""
    from nsmd.fastpath.aead import AEADS, aead_seconds
    from nsmd.tunnel_keys import parse_aeads

    size = 1408
    by_aead = {}
    for aead in AEADS:
        us = {f"{op}_{n}_us": round(min(aead_seconds(op, n, count, aead) for _ in range(3))
                                    / count * 1e6, 3)
              for op in ("seal", "open") for n in (size, 64)}
        out = sh("openssl", "speed", "-seconds", "2", "-evp", aead, "-bytes", str(size)).stdout
        speed = float(out.strip().splitlines()[-1].split()[-1].rstrip("k")) * 1e3 / 1e9
        by_aead[aead] = {"bytes": size, **us,
                         "engine_gb_s": round(size / us[f"seal_{size}_us"] / 1e3, 2),
                         "openssl_speed_gb_s": round(speed, 2),
                         "floor_s_per_gb": round((us[f"seal_{size}_us"] + us[f"open_{size}_us"])
                                                 / size * 1e3, 2)}
    used = parse_aeads("auto", "tunnel-aead")[0]
    return {"aead": used, **by_aead[used], "by_aead": by_aead}


def print_table(results: dict) -> None:
    columns = [(k, label) for k, label in (
        ("veth", "veth"), ("wireguard_go", "wg-go"), ("wireguard_go_modern", "wg-go-new"),
        ("naive", "naive"),
        ("nsmd_cross_host", "nsmd-x"), ("nsmd_same_host", "nsmd-local")) if results.get(k)]
    print(f"\n{'':<22}" + "".join(f"{label:>12}" for _, label in columns))
    rows = (("TCP 1 stream Gbit/s", lambda r: r["tcp1"]["gbps"]),
            ("TCP 4 streams Gbit/s", lambda r: r["tcp4"]["gbps"]),
            ("UDP 64 B kpps", lambda r: round(r["udp64_pps"] / 1000, 1)),
            ("  into the netns kpps", lambda r: round(r["udp64_tunnel_pps"] / 1000, 1)),
            ("RTT p50 us", lambda r: r["rtt"]["p50_us"]),
            ("RTT p99 us", lambda r: r["rtt"]["p99_us"]),
            ("CPU s/GB (1 stream)", lambda r: r["tcp1"]["cpu_s_per_gb"] or "-"),
            ("2 vWires TCP Gbit/s", lambda r: r.get("tcp_2_vwires", {}).get("gbps", "-")))
    for label, get in rows:
        print(f"{label:<22}" + "".join(f"{get(results[k])!s:>12}" for k, _ in columns))
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in results["ratios"].items()))
    print(f"cross-host setup p50/p99 ms: {results['nsmd_cross_host']['setup_ms']['p50']} / "
          f"{results['nsmd_cross_host']['setup_ms']['p99']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="iperf3 duration per test")
    ap.add_argument("--rounds", type=int, default=2,
                    help="TCP runs of modern wireguard-go and nsmd across hosts, taking turns "
                    "(their means are compared)")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--connects", type=int, default=50, help="sequential cross-host setups")
    ap.add_argument("--naive", default=NAIVE_DEFAULT, help="path of naive_tunnel.py")
    ap.add_argument("--modern", default="", metavar="PATH",
                    help="modern wireguard-go binary (default: fetched by "
                    "../shared/bench/modern-wireguard-go.sh)")
    ap.add_argument("--only", default="", metavar="NAMES",
                    help="comma-separated subset of veth,classic,modern,naive,nsmd (default: "
                    "all; the ratios need nsmd and the anchors they name)")
    ap.add_argument("--perf", default="", metavar="DIR",
                    help="also profile both nsmd daemons with perf (call graphs) during one "
                    "more single-stream TCP run: DIR/near.data, DIR/far.data and their reports")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    wanted = set(args.only.split(",")) if args.only else \
        {"veth", "classic", "modern", "naive", "nsmd"}
    if os.geteuid() != 0:
        print("bench/datapath.py needs root", file=sys.stderr)
        return 1
    need_tools(bool(args.perf))
    bed = Bed()
    results: dict = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
                     "seconds": args.seconds}
    try:
        a, b = bed.netns("a"), bed.netns("b")
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0b", netns=a)
        sh("ip", "link", "set", "eth0b", "netns", b, netns=a)
        sh("ip", "link", "set", "eth0b", "name", "eth0", netns=b)
        for ns, ip in ((a, UA), (b, UB)):
            sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", netns=ns)
            sh("ip", "link", "set", "eth0", "up", netns=ns)
        if "veth" in wanted:
            results["veth"] = measure("veth", a, b, UB, [], args)
        if "classic" in wanted:
            results["wireguard_go"] = run_wireguard_go(bed, a, b, args)
        if "naive" in wanted:
            results["naive"] = run_naive(bed, a, b, args)
        modern = modern_wireguard_go(args.modern) if "modern" in wanted else None
        results["wireguard_go_modern"] = None
        if modern and "nsmd" in wanted:
            # the anchor that counts and nsmd set up side by side, their TCP runs in turns
            with wireguard_go(bed, a, b, modern) as wg_pids, \
                    nsmd_hosts(bed, a, b, args) as hosts:
                tcp = interleaved_tcp({"modern wireguard-go": (a, b, OB, wg_pids),
                                       "nsmd cross-host": (hosts.nsc, hosts.nse, hosts.target,
                                                           hosts.pids)},
                                      args.seconds, args.rounds)
                results["wireguard_go_modern"] = measure(
                    "modern wireguard-go", a, b, OB, wg_pids, args,
                    tcp=tcp["modern wireguard-go"])
                nsmd = run_nsmd(bed, b, args, hosts, tcp["nsmd cross-host"])
        elif modern:
            results["wireguard_go_modern"] = run_wireguard_go(bed, a, b, args, modern,
                                                              "modern wireguard-go")
        elif "nsmd" in wanted:
            with nsmd_hosts(bed, a, b, args) as hosts:
                nsmd = run_nsmd(bed, b, args, hosts)
        if "nsmd" in wanted:
            results["nsmd_cross_host"] = nsmd["cross_host"]
            results["nsmd_same_host"] = nsmd["same_host"]
            results["crypto"] = crypto_rates()
            print(f"--- AEADs on one core: {results['crypto']}", flush=True)
    finally:
        bed.close()
    if wanted != {"veth", "classic", "modern", "naive", "nsmd"}:
        print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
        return 0  # a partial run: no ratios, nothing saved over the full run's results
    n, w, v = results["nsmd_cross_host"], results["wireguard_go"], results["veth"]
    local = results["nsmd_same_host"]
    results["ratios"] = {
        "tcp1_cross_host_over_wggo": round(n["tcp1"]["gbps"] / w["tcp1"]["gbps"], 2),
        "tcp4_cross_host_over_wggo": round(n["tcp4"]["gbps"] / w["tcp4"]["gbps"], 2),
        "udp64_cross_host_over_wggo": round(n["udp64_pps"] / w["udp64_pps"], 2),
        "rtt_p50_cross_host_over_wggo": round(n["rtt"]["p50_us"] / w["rtt"]["p50_us"], 2),
        "tcp1_same_host_over_veth": round(local["tcp1"]["gbps"] / v["tcp1"]["gbps"], 3),
    }
    m = results["wireguard_go_modern"]
    if m:  # the anchor that counts
        results["ratios"].update({
            "tcp1_cross_host_over_modern": round(n["tcp1"]["gbps"] / m["tcp1"]["gbps"], 2),
            "tcp4_cross_host_over_modern": round(n["tcp4"]["gbps"] / m["tcp4"]["gbps"], 2),
            "udp64_cross_host_over_modern": round(n["udp64_pps"] / m["udp64_pps"], 2),
            "udp64_tunnel_cross_host_over_modern": round(n["udp64_tunnel_pps"] /
                                                         m["udp64_tunnel_pps"], 2),
            "rtt_p50_cross_host_over_modern": round(n["rtt"]["p50_us"] / m["rtt"]["p50_us"],
                                                    2),
            "cpu_per_gb_modern_over_nsmd": round(m["tcp1"]["cpu_s_per_gb"] /
                                                 n["tcp1"]["cpu_s_per_gb"], 2)
            if m["tcp1"]["cpu_s_per_gb"] and n["tcp1"]["cpu_s_per_gb"] else None,
        })
    print_table(results)
    save("datapath", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
