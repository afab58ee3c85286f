"""Multi-host beds for the namespace tests: node namespaces on one bridge (underlay
192.0.2.0/24), a daemon in each with an SVID of one development trust domain, the first
holding the registry."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from nsmd.testing.sandbox import (
    VL3_SERVICE,
    DaemonProc,
    endpoint_manifest,
    host,
    service_manifest,
    sh,
    trust_domain,
    underlay,
    vl3_endpoint_manifest,
    wait_until,
)

DOMAIN = "test.nsmd"


def build_hosts(netns, daemon, tmp_path, names: list[str], env: dict | None = None,
                nodes: dict[str, str] | None = None, args: dict[str, tuple] | None = None,
                ) -> tuple[list[DaemonProc], dict[str, str]]:
    """A daemon per node name (n1 holds the registry, the others use it): (daemons in
    order, {node namespace: its underlay IP}). `nodes`: an underlay built already (in the
    order of `names`), else one bridge. `args`: more options for some daemons, by name."""
    nodes = nodes or underlay(netns, names)
    ids = trust_domain(str(tmp_path), DOMAIN, [f"spiffe://{DOMAIN}/node/{n}" for n in names])
    first_ip = next(iter(nodes.values()))
    daemons = []
    for i, (name, (ns, ip)) in enumerate(zip(names, nodes.items(), strict=True)):
        registry = ("--registry", f"https://{first_ip}:7000") if i else ()
        daemons.append(daemon(name, ns, ("--listen", f"{ip}:7000", *registry, "--identity-dir",
                                         ids[f"spiffe://{DOMAIN}/node/{name}"],
                                         *(args or {}).get(name, ())), env))
    return daemons, nodes


@contextmanager
def peer_port_blocked(node_ns: str, source: str | None = None) -> Iterator[None]:
    """New TCP connections to port 7000 in `node_ns` (from `source` only, if given) are
    reset by an nftables rule in that namespace until the block ends."""
    match = f"ip saddr {source} " if source else ""
    for command in ("add table inet nsmdt",
                    "add chain inet nsmdt input { type filter hook input priority 0 ; }",
                    f"add rule inet nsmdt input {match}tcp dport 7000 reject with tcp reset"):
        sh("nft", *command.split(), netns=node_ns)
    try:
        yield
    finally:
        sh("nft", "delete", "table", "inet", "nsmdt", netns=node_ns)


def build_two_hosts(netns, daemon, tmp_path, env: dict, service: str = "remote-svc",
                    endpoint: str = "far-1", prefix: str = "100.64.50.0/24",
                    nodes: dict[str, str] | None = None, args: dict[str, tuple] | None = None):
    """Two hosts, an endpoint of `service` hosted by n2 and seen from n1; returns
    (n1's daemon, n2's daemon, endpoint ns, client ns, {node ns: ip})."""
    (near, far), nodes = build_hosts(netns, daemon, tmp_path, ["n1", "n2"], env, nodes, args)
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    far.cli("apply", "-f", "-", stdin=service_manifest(service) + "---" +
            endpoint_manifest(endpoint, service, nse_ns, prefix))
    wait_until(lambda: any(e["name"] == endpoint for e in near.cli_json("get", "endpoints")))
    return near, far, nse_ns, nsc_ns, nodes


def connect(d, service: str, netns: str) -> tuple[dict, str]:
    """A vWire for `netns`: (the connection, the endpoint's address)."""
    conn = d.cli_json("connect", service, "--netns", netns)
    return conn, host(conn["context"]["ip_context"]["dst_ip_addrs"][0])


def logged_at(d: DaemonProc, pattern: str, after: float) -> float | None:
    """When (time.time()) the daemon first logged a line matching `pattern` after `after`."""
    for line in d.log().splitlines():
        stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", line)
        if stamp is None or not re.search(pattern, line):
            continue
        when = dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if when >= after:
            return when
    return None


def assert_no_leaks(d: DaemonProc, wires: int, leases: int = 0) -> dict:
    """The daemon holds exactly `wires` vWires and `leases` address leases, heals nothing
    and its engines run no lane without a wire; returns its status."""
    status = d.cli_json("status")
    plane = status["dataplane"]
    assert (plane["wires"], status["leases"], status["heal"]["healing"]) == (
        wires, leases, 0), status
    assert plane["lanes"] >= wires and (plane["lanes"] == 0) == (wires == 0), status
    return status


def report(scenario: str, **figures) -> None:
    """A fault test's measurements: printed, and appended to $NSMD_FAULT_REPORT as a JSON
    line when it is set (bench/faults.py collects them)."""
    line = json.dumps({"scenario": scenario, **figures})
    print(line)
    path = os.environ.get("NSMD_FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


# -- vL3 ------------------------------------------------------------------------------

def subnets_of(d) -> dict[str, str]:
    return {e["name"]: e["network_service_labels"]["vl3"]["labels"].get("vl3Subnet", "")
            for e in d.cli_json("get", "endpoints")}


def address(conn: dict) -> str:
    return host(conn["context"]["ip_context"]["src_ip_addrs"][0])


def mesh_vwires(daemons) -> set[str]:
    """The mesh vWires (by the asking endpoint's segment id) all daemons see."""
    return {c["path"]["path_segments"][0]["id"] for d in daemons
            for c in d.cli_json("get", "connections") if c["labels"].get("vl3Peer")}


def build_vl3(netns, daemon, tmp_path, names=("n1", "n2", "n3"), env: dict | None = None,
              policies: dict[str, str] | None = None):
    daemons, _ = build_hosts(netns, daemon, tmp_path, list(names),
                             {"NSMD_KEEPALIVE_S": "0.5", **(env or {})},
                             args={n: ("--policy", p) for n, p in (policies or {}).items()})
    daemons[0].cli("apply", "-f", "-", stdin=VL3_SERVICE)
    for d in daemons:
        d.cli("apply", "-f", "-",
              stdin=vl3_endpoint_manifest(f"vl3-{d.name}", netns(f"r-{d.name}")))
    wait_until(lambda: all(len([s for s in subnets_of(d).values() if s]) == len(daemons)
                           for d in daemons))
    return daemons


def lookup(ns: str, name: str) -> list[str]:
    """Addresses the namespace's resolver gives for `name` (glibc, as any program does)."""
    done = sh("getent", "ahostsv4", name, netns=ns, check=False)
    return sorted({line.split()[0] for line in done.stdout.splitlines()})
