"""The seed's use cases over vL3, end to end in namespaces, on vWire addresses only:
a database replicated across hosts by name, an HTTP service reached by name, one
workload in two services at once, and two organisations (daemons with policies of their
own) sharing one vL3 service."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

from nsmd.testing.sandbox import endpoint_manifest, host, ping, sh, wait_until
from tests.integration.beds import (
    DOMAIN,
    address,
    build_vl3,
    lookup,
)


def started(netns: str, *cmd: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", netns, *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def test_a_database_replicates_across_hosts_by_name(netns, daemon, tmp_path):
    assert shutil.which("redis-server"), "redis-server is missing: run scripts/setup"
    d1, d2, _ = build_vl3(netns, daemon, tmp_path)
    primary_ns, replica_ns = netns("db1"), netns("db2")
    primary = d1.cli_json("connect", "vl3", "--netns", primary_ns, "--client-name", "db-primary")
    d2.cli_json("connect", "vl3", "--netns", replica_ns, "--client-name", "db-replica")
    common = ("--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no")
    procs = [started(primary_ns, "redis-server", "--bind", address(primary), "--dir",
                     str(tmp_path), *common)]
    try:
        wait_until(lambda: lookup(replica_ns, "db-primary.vl3") == [address(primary)], 10)
        procs.append(started(replica_ns, "redis-server", "--bind", "127.0.0.1", "--dir",
                             str(tmp_path), "--replicaof", "db-primary.vl3", "6379", *common))

        def cli(ns, *args):
            return sh("redis-cli", "-h", "127.0.0.1" if ns == replica_ns else address(primary),
                      *args, netns=ns, check=False).stdout.strip()

        wait_until(lambda: cli(primary_ns, "PING") == "PONG", 10)
        assert cli(primary_ns, "SET", "greeting", "over vL3") == "OK"
        wait_until(lambda: cli(replica_ns, "GET", "greeting") == "over vL3", 15, 0.3)
        info = cli(replica_ns, "INFO", "replication")
        assert "master_host:db-primary.vl3" in info and "master_link_status:up" in info
    finally:
        for proc in procs:
            stop(proc)


def test_an_http_service_on_one_host_is_reached_by_name_from_another(netns, daemon, tmp_path):
    d1, _, d3 = build_vl3(netns, daemon, tmp_path)
    web_ns, client_ns = netns("web"), netns("browser")
    web = d1.cli_json("connect", "vl3", "--netns", web_ns, "--client-name", "web")
    d3.cli_json("connect", "vl3", "--netns", client_ns)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello from host 1\n")
    server = started(web_ns, sys.executable, "-m", "http.server", "8080", "--bind",
                     address(web), "--directory", str(tmp_path / "www"))
    fetch = textwrap.dedent("""
        import sys, urllib.request
        print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end="")
    """)
    try:
        def body():
            done = sh(sys.executable, "-c", fetch, "http://web.vl3:8080/index.html",
                      netns=client_ns, check=False)
            return done.stdout
        wait_until(lambda: body() == "hello from host 1\n", 15, 0.3)
    finally:
        stop(server)


def test_one_workload_in_two_services_at_once(netns, daemon, tmp_path):
    d1, d2, _ = build_vl3(netns, daemon, tmp_path)
    nse_ns = netns("icmp")
    d2.cli("apply", "-f", "-", stdin="""
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: icmp}
spec: {payload: IP}
---""" + endpoint_manifest("icmp-1", "icmp", nse_ns, "169.254.40.0/24"))
    wait_until(lambda: any(e["name"] == "icmp-1" for e in d1.cli_json("get", "endpoints")))
    workload, peer = netns("workload"), netns("peer")
    on_vl3 = d1.cli_json("connect", "vl3", "--netns", workload)
    on_icmp = d1.cli_json("connect", "icmp", "--netns", workload)
    other = d2.cli_json("connect", "vl3", "--netns", peer)
    names = {on_vl3["mechanism"]["parameters"]["name"], on_icmp["mechanism"]["parameters"]["name"]}
    assert len(names) == 2  # two interfaces
    routes = sh("ip", "-4", "route", "show", netns=workload).stdout
    vl3_dev, icmp_dev = (c["mechanism"]["parameters"]["name"] for c in (on_vl3, on_icmp))
    assert f"100.64.0.0/16 dev {vl3_dev}" in routes
    icmp_target = host(on_icmp["context"]["ip_context"]["dst_ip_addrs"][0])
    assert f"{icmp_target} dev {icmp_dev}" in routes
    assert ping(workload, address(other), 2).returncode == 0      # vL3, across hosts
    assert ping(workload, icmp_target, 2).returncode == 0         # the other service
    d1.cli("close", on_icmp["id"])
    assert ping(workload, address(other), 1).returncode == 0      # one goes, one stays


def policy(vl3_ids: list[str], register_ids: list[str]) -> str:
    def subjects(ids):
        return ", ".join(["unix:uid=0", *(f"spiffe://{DOMAIN}/node/{i}" for i in ids)])
    return f"""
services:
  - name: vl3
    request: [{subjects(vl3_ids)}]
    register: [{subjects(register_ids)}]
default:
  request: [unix:uid=0]
  register: [{subjects(register_ids)}]
"""


def test_two_organisations_share_one_vl3_service_each_with_its_own_policy(
        netns, daemon, tmp_path):
    # Until inter-domain lands: organisation A runs n1 (with the registry) and n2, B runs
    # n3; each daemon's policy lets the other organisation's daemons into vl3 only.
    files = {}
    for name, text in {"n1": policy(["n1", "n2", "n3"], ["n2", "n3"]),
                       "n2": policy(["n1", "n2", "n3"], []),
                       "n3": policy(["n1", "n2", "n3"], [])}.items():
        files[name] = str(tmp_path / f"policy-{name}.yaml")
        with open(files[name], "w") as f:
            f.write(text)
    _, d2, d3 = build_vl3(netns, daemon, tmp_path, policies=files)
    a_ns, b_ns = netns("org-a"), netns("org-b")
    a = d2.cli_json("connect", "vl3", "--netns", a_ns, "--client-name", "app-a")
    b = d3.cli_json("connect", "vl3", "--netns", b_ns, "--client-name", "app-b")
    wait_until(lambda: lookup(a_ns, "app-b.vl3") == [address(b)], 10)
    assert ping(a_ns, "app-b.vl3", 2).returncode == 0
    assert lookup(b_ns, "app-a.vl3") == [address(a)]
    assert ping(b_ns, "app-a.vl3", 2).returncode == 0
    # B's private service: B's policy keeps A's daemons out of it
    private_ns = netns("b-private")
    d3.cli("apply", "-f", "-", stdin="""
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: b-private}
spec: {payload: IP}
---""" + endpoint_manifest("b-private-1", "b-private", private_ns, "169.254.41.0/24"))
    wait_until(lambda: any(e["name"] == "b-private-1" for e in d2.cli_json("get", "endpoints")))
    refused = d2.cli("connect", "b-private", "--netns", netns("org-a-2"), "--timeout", "0",
                     check=False)
    assert refused.returncode != 0 and "denied by policy" in refused.stderr, refused.stderr
    assert d3.cli_json("connect", "b-private", "--netns", netns("org-b-2"))["id"]
