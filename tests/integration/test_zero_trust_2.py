"""Zero trust, round two, black-box: what the features added after the first round (vL3,
DNS, manifests, capture, IPAM, inter-domain) let an ordinary SVID holder or a local user
do, tried against real daemons. Each attack is refused, or answered harmlessly, at once;
the legitimate vWire alongside loses nothing. docs/security.md lists each one."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time

from nsmd.identity import tokens
from nsmd.testing.attacker import EVIL, IP2, N2, Bed, as_user
from nsmd.testing.sandbox import (
    endpoint_manifest,
    host,
    ping,
    ping_report,
    service_manifest,
    sh,
    wait_until,
)

FAR = f"https://{IP2}:7000"


def pinging(bed: Bed, conn: dict, count: int) -> subprocess.Popen:
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    return subprocess.Popen(["ip", "netns", "exec", bed.nsc_ns, "ping", "-c", str(count),
                             "-i", "0.02", "-W", "1", target], stdout=subprocess.PIPE, text=True)


def test_exclusions_that_cover_a_whole_pool_are_answered_at_once(netns, daemon, tmp_path):
    """Finding 4: `excluded_prefixes: ["::/0"]` against an IPv6 pool walked 2^64 addresses
    on the event loop (a /10 IPv4 pool: seconds per request); now exclusions are ranges
    that allocation jumps over."""
    bed = Bed(netns, daemon, tmp_path)
    bed.far.cli("apply", "-f", "-", stdin=endpoint_manifest(
        "far-6", "remote-svc", bed.nse_ns, "2001:db8:64::/64") + "---" + endpoint_manifest(
        "far-10", "remote-svc", bed.nse_ns, "100.64.0.0/10"))
    conn = bed.near.cli_json("connect", "remote-svc", "--netns", bed.nsc_ns)
    pinger = pinging(bed, conn, 150)
    try:
        for endpoint, excluded in (("far-6", ["::/0"]),
                                   ("far-10", ["100.64.0.0/11", "100.96.0.0/12",
                                               "100.112.0.0/13", "100.120.0.0/14",
                                               "100.124.0.0/15", "100.126.0.0/16",
                                               "100.127.0.0/17", "100.127.128.0/18",
                                               "100.127.192.0/18"])):
            body = bed.request(endpoint=endpoint)
            body["connection"]["context"]["ip_context"]["excluded_prefixes"] = excluded
            result = bed.attack("POST", f"{FAR}/v1/peer/request", body)
            assert result["status"] == 503, result
            assert "is exhausted" in result["body"]["error"], result
            assert result["seconds"] < 1.0, result
        body = bed.request(endpoint="far-6")
        body["connection"]["context"]["ip_context"]["excluded_prefixes"] = ["x" * 20]
        result = bed.attack("POST", f"{FAR}/v1/peer/request", body)
        assert result["status"] == 400 and result["body"]["field"] == "excluded_prefixes"
    finally:
        out = pinger.communicate(timeout=60)[0]
    assert " 0% packet loss" in out, ping_report(out)


def test_a_caller_token_for_ever_ends_with_the_servers_lifetime(netns, daemon, tmp_path):
    """Finding 12: a caller's token `exp` of 9999-12-31 was taken as the end of its
    segment, so the server's timeout never fired for a caller that stopped refreshing."""
    bed = Bed(netns, daemon, tmp_path)
    now = time.time()
    for_ever = tokens.jwt.encode({"sub": EVIL, "aud": N2, "exp": 253402300799},
                                 bed.evil.key, algorithm="ES256")
    result = bed.attack("POST", f"{FAR}/v1/peer/request", bed.request(caller_token=for_ever))
    assert result["status"] == 200, result
    caller_segment = result["body"]["path"]["path_segments"][1]
    ends = dt.datetime.fromisoformat(caller_segment["expires"]).timestamp()
    assert ends <= min(now + 600 + 5, bed.evil.not_after.timestamp()), caller_segment
    bed.attack("POST", f"{FAR}/v1/peer/close", result["body"])


def endpoint_doc(name: str, nsmd: dict) -> dict:
    return {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkServiceEndpoint",
            "metadata": {"name": name},
            "spec": {"network_service_names": ["shared"], "nsmd": nsmd}}


def test_a_local_api_group_member_hosts_endpoints_only_in_named_namespaces(netns, daemon,
                                                                           tmp_path):
    """Finding 3: `--api-group` members could apply endpoint manifests with interfaces in
    the daemon's own namespace or /proc/1/ns/net, and a capture path through a link of
    theirs made root truncate and write any file."""
    nobody = 65534
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
services:
  - name: shared
    request: ["unix:gid={nobody}", "unix:uid=0"]
    register: ["unix:gid={nobody}", "unix:uid=0"]
""")
    run_dir = tempfile.mkdtemp(prefix="nsmdt-run-")
    os.chmod(run_dir, 0o755)
    sock = os.path.join(run_dir, "api.sock")
    victim = tmp_path / "root-only"
    victim.write_bytes(b"root's")
    victim.chmod(0o600)
    try:
        d = daemon("n1", args=("--policy", str(policy), "--api-group", str(nobody)),
                   socket=sock)
        d.cli("apply", "-f", "-", stdin=service_manifest("shared"))
        nse_ns, app_ns = netns("nse"), netns("app")
        before = (d.cli_json("get", "endpoints"), sh("ip", "-o", "link").stdout)

        def apply_as_nobody(*docs):
            return as_user(nobody, nobody, sock, "POST", "/v1/apply", {"documents": list(docs)})

        ipam = {"prefix": "169.254.30.0/24"}
        for where in ("", "/proc/1/ns/net"):
            status, body = apply_as_nobody(endpoint_doc("e-x", {"netns": where, "ipam": ipam}))
            assert status == 403 and body["policy"] == "local_namespaces", body
        status, body = apply_as_nobody(endpoint_doc("e-x", {"supplier": {"ipam": ipam}}))
        assert status == 403 and body["policy"] == "local_namespaces", body
        # all or nothing: a good endpoint beside a bad one is not applied either
        status, body = apply_as_nobody(endpoint_doc("e-ok", {"netns": nse_ns, "ipam": ipam}),
                                       endpoint_doc("e-x", {"netns": "", "ipam": ipam}))
        assert status == 403 and body["policy"] == "local_namespaces", body
        link = os.path.join(run_dir, "link.pcap")   # a link of the user's to root's file
        os.symlink(victim, link)
        status, body = apply_as_nobody(endpoint_doc("e-x", {
            "netns": nse_ns, "ipam": ipam,
            "functions": [{"name": "capture", "config": {"path": link}}]}))
        assert status == 400 and body["field"].endswith("functions[0].config.path"), body
        assert (d.cli_json("get", "endpoints"), sh("ip", "-o", "link").stdout) == before

        # what the member may do: an endpoint in a named namespace, capturing to its file
        status, body = apply_as_nobody(endpoint_doc("e-ok", {
            "netns": nse_ns, "ipam": ipam,
            "functions": [{"name": "capture", "config": {"path": "mine.pcap",
                                                         "max_bytes": 10**9}}]}))
        assert status == 200, body
        status, conn = as_user(nobody, nobody, sock, "POST", "/v1/connections",
                               {"network_service": "shared", "netns": app_ns})
        assert status == 201, conn
        assert ping(app_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                    2).returncode == 0
        seg = conn["path"]["path_segments"][-1]["id"][:8]
        pcap = os.path.join(d.state_dir, "capture", f"mine-{seg}.pcap")
        wait_until(lambda: os.path.exists(pcap) and os.path.getsize(pcap) > 100, timeout=3)
        assert victim.read_bytes() == b"root's"
    finally:
        shutil.rmtree(run_dir)
