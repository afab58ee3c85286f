"""Zero trust, round two, black-box: what the features added after the first round (vL3,
DNS, manifests, capture, IPAM, inter-domain) let an ordinary SVID holder or a local user
do, tried against real daemons. Each attack is refused, or answered harmlessly, at once;
the legitimate vWire alongside loses nothing. docs/security.md lists each one."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from nsmd.identity import tokens
from nsmd.testing.attacker import EVIL, IP1, IP2, IP_EVIL, N1, N2, Bed, as_user, refused
from nsmd.testing.sandbox import (
    VL3_SERVICE,
    endpoint_manifest,
    host,
    ping,
    ping_report,
    service_manifest,
    sh,
    trust_domain,
    underlay,
    vl3_endpoint_manifest,
    wait_until,
)
from tests.integration.beds import address, build_vl3, lookup, subnets_of

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


def test_a_vl3_peer_routes_only_its_own_registered_subnet(netns, daemon, tmp_path):
    """Finding 1: an endpoint registered for a decoy service, with a vl3Subnet label of
    the vL3 service naming a victim client's /32, could ask a real vL3 endpoint for a mesh
    vWire: the claim was read without checking the endpoint offers the service, any prefix
    length was taken, and the route replaced the victim's."""
    bed = Bed(netns, daemon, tmp_path)
    router = netns("router")
    bed.near.cli("apply", "-f", "-", stdin=VL3_SERVICE)
    bed.far.cli("apply", "-f", "-", stdin=vl3_endpoint_manifest("vl3-far", router))
    wait_until(lambda: any(e["name"] == "vl3-far" and e["network_service_labels"]["vl3"]
                           ["labels"].get("vl3Subnet") for e in bed.near.cli_json(
                               "get", "endpoints")))
    victim_ns = netns("victim")
    victim = bed.far.cli_json("connect", "vl3", "--netns", victim_ns)
    target = host(victim["context"]["ip_context"]["src_ip_addrs"][0])
    route_before = sh("ip", "route", "get", target, netns=router).stdout
    registry = f"https://{IP1}:7000"

    def register(name: str, services: list[str], subnet: str) -> dict:
        return bed.attack("POST", f"{registry}/v1/endpoints", {
            "name": name, "network_service_names": services,
            "network_service_labels": {"vl3": {"labels": {"vl3Subnet": subnet}}},
            "url": f"https://{IP_EVIL}:7000"})

    def mesh_request(peer: str) -> dict:
        body = bed.request(endpoint="vl3-far", service="vl3")
        body["connection"]["labels"] = {"vl3Peer": peer}
        return bed.attack("POST", f"{FAR}/v1/peer/request", body)

    # a claim under a service the endpoint does not offer: refused by the registry
    result = register("evil-decoy", ["decoy"], f"{target}/32")
    assert result["status"] == 400, result
    assert result["body"]["field"] == "network_service_labels.vl3.labels.vl3Subnet", result
    # a claim overlapping a held subnet: refused as before
    assert register("evil-vl3", ["vl3"], f"{target}/32")["status"] == 409
    # a free /32 of the prefix is registered, but routes no mesh vWire: not a /24
    assert register("evil-vl3", ["vl3"], "100.64.250.7/32")["status"] == 200
    refused(mesh_request("evil-vl3"), "vl3_peer")
    refused(mesh_request("evil-decoy"), "vl3_peer")
    assert sh("ip", "route", "get", target, netns=router).stdout == route_before
    assert ping(victim_ns, host(victim["context"]["ip_context"]["dst_ip_addrs"][0]),
                1).returncode == 0


FLOOD = """
import socket, sys, time
from dnslib import DNSRecord
server, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
deadline = time.monotonic() + 5
for i in range(count):
    s.sendto(DNSRecord.question(f"x{i}.vl3").pack(), (server, 53))
    if time.monotonic() > deadline:
        break
"""
# A mesh member's resolver that answers every question with an address of another
# endpoint's subnet, for the name asked and for another one.
POISONER = """
import socket, sys
from dnslib import QTYPE, RR, A, DNSRecord
poison = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5354))
s.settimeout(60)
while True:
    data, addr = s.recvfrom(512)
    query = DNSRecord.parse(data)
    reply = query.reply()
    reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(poison), ttl=60))
    reply.add_answer(RR("web.vl3.", QTYPE.A, rdata=A(poison), ttl=60))
    s.sendto(reply.pack(), addr)
"""


def test_a_vl3_resolver_takes_no_poison_forwards_nothing_and_stays_bounded(
        netns, daemon, tmp_path):
    """Finding 8: peers' answers were taken for any name with any address (any mesh member
    could speak for another's clients); names outside the zone went to the host's
    resolvers without anyone enabling it; queries waited on peers without bound (65,536 in
    flight looped DnsExchange.ask for ever: tests/vl3/test_dns.py)."""
    d1, d2 = build_vl3(netns, daemon, tmp_path, names=("n1", "n2"),
                       env={"NSMD_DNS_UPSTREAM": "127.0.0.1:5353"})
    made = netns.__self__.made
    node1 = [ns for ns in made if ns.endswith("-n1")][0]
    router2 = [ns for ns in made if ns.endswith("-r-n2")][0]
    poison = str(ipaddress.ip_network(subnets_of(d1)["vl3-n1"])[77])
    for command in ("add table ip nsmdt",     # n2's resolver is the poisoner's now
                    "add chain ip nsmdt pre { type nat hook prerouting priority -100 ; }",
                    "add rule ip nsmdt pre udp dport 53 redirect to :5354"):
        sh("nft", *command.split(), netns=router2)
    helpers = [subprocess.Popen(["ip", "netns", "exec", router2, sys.executable, "-c",
                                 POISONER, poison]),
               subprocess.Popen(["ip", "netns", "exec", node1, sys.executable, "-m",
                                 "dnslib.fixedresolver", "--address", "127.0.0.1", "--port",
                                 "5353", "--response", ". 60 IN A 198.51.100.7", "--log=-"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        client_ns = netns("c-flood")
        conn = d1.cli_json("connect", "vl3", "--netns", client_ns, "--client-name", "web")
        server = host(conn["context"]["dns_context"]["configs"][0]["dns_server_ips"][0])
        time.sleep(0.5)
        assert lookup(client_ns, "web.vl3") == [address(conn)]
        assert lookup(client_ns, "ghost.vl3") == []          # the poisoner's answer is not n2's
        assert lookup(client_ns, "www.example.test") == []   # not forwarded: not enabled
        sh(sys.executable, "-c", FLOOD, server, "20000", netns=client_ns, timeout=30)
        started = time.monotonic()
        d1.cli_json("status")                                # the daemon answers at once
        assert time.monotonic() - started < 1.0
        wait_until(lambda: lookup(client_ns, "web.vl3") == [address(conn)], timeout=5)
    finally:
        for helper in helpers:
            helper.kill()
            helper.wait(5)


def test_a_vl3_dns_name_stays_with_its_first_holder(netns, daemon, tmp_path):
    """Finding 2: names were not owned: a peer whose (unverified) client segment is named
    nsc@db, or a local user with --client-name db, added its address under db, and the
    endpoint's resolver then answered with it."""
    nobody = 65534
    run_dir = tempfile.mkdtemp(prefix="nsmdt-run-")
    os.chmod(run_dir, 0o755)
    sock = os.path.join(run_dir, "api.sock")
    try:
        bed = Bed(netns, daemon, tmp_path, n2_args=("--api-group", str(nobody)),
                  n2_socket=sock)
        router = netns("router")
        bed.near.cli("apply", "-f", "-", stdin=VL3_SERVICE)
        bed.far.cli("apply", "-f", "-", stdin=vl3_endpoint_manifest("vl3-far", router))
        wait_until(lambda: bed.far.cli_json("get", "endpoints") and any(
            e["network_service_labels"].get("vl3", {}).get("labels", {}).get("vl3Subnet")
            for e in bed.far.cli_json("get", "endpoints")))
        db_ns, app_ns, user_ns = netns("db"), netns("app"), netns("user")
        db = bed.far.cli_json("connect", "vl3", "--netns", db_ns, "--client-name", "db")
        bed.far.cli_json("connect", "vl3", "--netns", app_ns)
        wait_until(lambda: lookup(app_ns, "db.vl3") == [address(db)], timeout=5)
        # a peer's client calling itself db
        result = bed.attack("POST", f"{FAR}/v1/peer/request",
                            bed.request(endpoint="vl3-far", service="vl3", client="nsc@db"))
        assert result["status"] == 200, result   # its vWire, with an address, but no name
        # a local user's client calling itself db
        status, mine = as_user(nobody, nobody, sock, "POST", "/v1/connections", {
            "network_service": "vl3", "netns": user_ns, "client": "db"})
        assert status == 201, mine
        assert lookup(app_ns, "db.vl3") == [address(db)]
        assert "DNS name 'db' is held by" in bed.far.log()
        # the holder's name frees when its vWire closes; then it is the next one's
        bed.far.cli("close", db["id"])
        wait_until(lambda: lookup(app_ns, "db.vl3") == [], timeout=5)
    finally:
        shutil.rmtree(run_dir)


def test_a_federated_trust_domain_gets_only_what_a_policy_names_it_for(netns, daemon,
                                                                      tmp_path):
    """Finding 10: without a policy file a federated SVID registered names (and vL3
    claims) in our registry and requested any service."""
    (na, ip_a), (nb, ip_b) = underlay(netns, ["na", "nb"]).items()
    a_id, b_id = "spiffe://a.test/node/a", "spiffe://b.test/node/b"
    a_dir = trust_domain(str(tmp_path), "a.test", [a_id])[a_id]
    b_dir = trust_domain(str(tmp_path), "b.test", [b_id])[b_id]
    db = daemon("b", nb, ("--listen", f"{ip_b}:7000", "--identity-dir", b_dir, "--federate",
                          f"a.test={a_dir}/bundle.pem"))
    nse, client = netns("nse"), netns("client")
    db.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
           endpoint_manifest("nse-b", "svc", nse, "100.64.63.0/24"))
    registry = f"https://{ip_b}:7000"

    def as_a(method: str, path: str, body=None) -> dict:
        args = ["env", f"NSMD_FEDERATE=b.test={b_dir}/bundle.pem", sys.executable, "-m",
                "nsmd.testing.peercall", a_dir, method, registry + path]
        return json.loads(sh(*args, *([json.dumps(body)] if body else []), netns=na).stdout)

    before = db.cli_json("get", "endpoints")
    result = as_a("POST", "/v1/endpoints", {"name": "a-1", "network_service_names": ["svc"],
                                            "url": f"https://{ip_a}:7000"})
    assert result["status"] == 403 and result["body"]["policy"] == "default", result
    assert "federated trust domain a.test" in result["body"]["error"]
    assert db.cli_json("get", "endpoints") == before
    da = daemon("a", na, ("--listen", f"{ip_a}:7000", "--identity-dir", a_dir, "--federate",
                          f"b.test={b_dir}/bundle.pem", "--domains", str(_table(
                              tmp_path, ip_b))))
    denied = da.cli("connect", "svc@b.test", "--netns", client, "--timeout", "0",
                    check=False)
    assert denied.returncode != 0 and "federated trust domain a.test" in denied.stderr
    assert db.cli_json("get", "connections") == []
    # named by B's policy: served
    policy = tmp_path / "b.yaml"
    policy.write_text('default: {request: ["*", "spiffe://a.test/node/a"]}\n')
    db.stop()
    db.args = db.args + ("--policy", str(policy))
    db.start()
    conn = da.cli_json("connect", "svc@b.test", "--netns", client)
    assert ping(client, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                2).returncode == 0


def _table(tmp_path, ip_b: str):
    table = tmp_path / "domains.toml"
    table.write_text(f'"b.test" = "https://{ip_b}:7000"\n')
    return table


SRV_ZONE = """
_nsmd-registry._tcp.b.test. 60 IN SRV 0 0 7000 registry.b.test.
registry.b.test. 60 IN A {ip}
"""


def test_a_domain_found_by_dns_srv_is_served_only_by_its_trust_domain(netns, daemon,
                                                                       tmp_path):
    """Finding 9: registries found by DNS SRV were not pinned to an identity: whoever
    answered DNS and held any SVID we trust (ours, or a federated domain's) became that
    domain's registry."""
    (na, ip_a), (nc, ip_c) = underlay(netns, ["na", "nc"]).items()
    a_id, c_id = "spiffe://a.test/node/a", "spiffe://c.test/node/c"
    a_dir = trust_domain(str(tmp_path), "a.test", [a_id])[a_id]
    c_dir = trust_domain(str(tmp_path), "c.test", [c_id])[c_id]
    zone = tmp_path / "b.zone"
    zone.write_text(SRV_ZONE.format(ip=ip_c))   # DNS says C's host is b.test's registry
    srv = subprocess.Popen(["ip", "netns", "exec", na, sys.executable, "-m",
                            "dnslib.zoneresolver", "--zone", str(zone), "--address",
                            "127.0.0.1", "--port", "5353", "--log=-"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dc = daemon("c", nc, ("--listen", f"{ip_c}:7000", "--identity-dir", c_dir,
                              "--federate", f"a.test={a_dir}/bundle.pem"))
        dc.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
               endpoint_manifest("nse-c", "svc", netns("nse"), "100.64.64.0/24"))
        da = daemon("a", na, ("--listen", f"{ip_a}:7000", "--identity-dir", a_dir,
                              "--federate", f"c.test={c_dir}/bundle.pem", "--dns-upstream",
                              "127.0.0.1:5353"))
        client = netns("client")
        time.sleep(0.3)
        denied = da.cli("connect", "svc@b.test", "--netns", client, "--timeout", "0",
                        check=False)
        assert denied.returncode != 0
        assert "must present an SVID of spiffe://b.test" in denied.stderr, denied.stderr
        assert not [e for e in da.cli_json("get", "endpoints") if e["name"].endswith("@b.test")]
        assert "not among the allowed peers" in da.log()
    finally:
        srv.terminate()
        srv.wait(timeout=5)


def test_a_client_takes_only_the_answer_to_what_it_asked(netns, daemon, tmp_path):
    """Finding 6: the client's daemon took the endpoint host's answer wholesale: another
    service or endpoint (so a refresh connected a user to one its policy denied), the
    caller's path rewritten, another connection's id, an expiry that drives refresh
    timing, and DNS contexts written to resolv.conf unchecked (a newline in a search domain
    added `nameserver 203.0.113.9`)."""
    bed = Bed(netns, daemon, tmp_path)
    registry = f"https://{IP1}:7000"
    assert bed.attack("POST", f"{registry}/v1/services", {"name": "evil-svc"})["status"] == 200
    assert bed.attack("POST", f"{registry}/v1/endpoints", {
        "name": "evil-ep", "network_service_names": ["evil-svc"],
        "url": f"https://{IP_EVIL}:7000"})["status"] == 200
    wait_until(lambda: any(e["name"] == "evil-ep" for e in bed.near.cli_json("get", "endpoints")))
    links = sh("ip", "-o", "link", netns=bed.nsc_ns).stdout

    def evil_peer(mode: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", bed.evil_ns, sys.executable, "-m",
                                 "nsmd.testing.evilpeer", bed.evil_dir, f"{IP_EVIL}:7000",
                                 mode])
        wait_until(lambda: ":7000" in sh("ss", "-ltn", netns=bed.evil_ns).stdout)
        return proc

    for mode, told in (("service", "for network service 'other-svc'"),
                       ("endpoint", "from endpoint 'other-ep'"),
                       ("path", "with the path before its hop rewritten"),
                       ("id", "for connection"),
                       ("dns", "a search domain that is no domain name")):
        peer = evil_peer(mode)
        try:
            denied = bed.near.cli("connect", "evil-svc", "--netns", bed.nsc_ns,
                                  "--timeout", "0", check=False)
        finally:
            peer.terminate()
            peer.wait(5)
        assert denied.returncode != 0, (mode, denied.stdout)
        assert "denied by policy peer_answer" in denied.stderr and told in denied.stderr, \
            (mode, denied.stderr)
        assert bed.near.cli_json("get", "connections") == []
        assert sh("ip", "-o", "link", netns=bed.nsc_ns).stdout == links
        assert not os.path.exists(f"/etc/netns/{bed.nsc_ns}/resolv.conf")
    # an expiry in 9999 is taken only up to our token lifetime
    peer = evil_peer("expires")
    try:
        now = time.time()
        conn = bed.near.cli_json("connect", "evil-svc", "--netns", bed.nsc_ns)
        far = conn["path"]["path_segments"][-1]
        assert dt.datetime.fromisoformat(far["expires"]).timestamp() <= now + 600 + 5, far
        bed.near.cli("close", conn["id"])
    finally:
        peer.terminate()
        peer.wait(5)


def test_a_relay_cannot_begin_a_path_in_anothers_name(netns, daemon, tmp_path):
    """Finding 7: the path's origin (claims[0].sub) was read without checking its
    signature, and --policy matched it: through a relay, a forged first segment with
    sub=frontend passed a rule meant for paths that began at frontend."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"services: [{{name: remote-svc, request: [{N1}, {EVIL}]}}]\n")
    bed = Bed(netns, daemon, tmp_path, n2_args=("--policy", str(policy)))
    now = time.time()
    as_frontend = tokens.jwt.encode({"sub": N1, "aud": EVIL, "exp": now + 600},
                                    bed.evil.key, algorithm="ES256")
    before = bed.footprint()
    refused(bed.attack("POST", f"{FAR}/v1/peer/request", bed.request(first=as_frontend)),
            "origin_signed")
    assert bed.footprint() == before
    # the path that really began at n1 (its first token carries n1's certificate) passes
    conn = bed.near.cli_json("connect", "remote-svc", "--netns", bed.nsc_ns)
    assert ping(bed.nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                2).returncode == 0


WATCHES = """
import asyncio, json, sys
import aiohttp
from nsmd.identity.svid import load_svid_dir
from nsmd.identity.tls import TlsContexts

async def main(identity_dir, url, count):
    tls = TlsContexts(load_svid_dir(identity_dir))
    async with aiohttp.ClientSession() as session:
        open_ = []
        for _ in range(count):   # one after the other, each kept open
            resp = await session.get(url, ssl=tls.client())
            open_.append(resp)
        print(json.dumps([r.status for r in open_]))
        for r in open_:
            r.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_one_peer_or_user_cannot_use_up_the_daemon(netns, daemon, tmp_path):
    """Finding 11: no quotas anywhere: per-peer connections, registry records, watch
    streams, body sizes (a local user's up to 256 MiB)."""
    nobody = 65534
    run_dir = tempfile.mkdtemp(prefix="nsmdt-run-")
    os.chmod(run_dir, 0o755)
    sock = os.path.join(run_dir, "api.sock")
    quotas = {"NSMD_QUOTA_CONNECTIONS_PER_PEER": "2", "NSMD_QUOTA_RECORDS_PER_REGISTRANT": "3",
              "NSMD_QUOTA_WATCHES_PER_PEER": "2", "NSMD_QUOTA_CONNECTIONS_PER_USER": "1",
              "NSMD_QUOTA_BODY_BYTES": "65536"}
    try:
        bed = Bed(netns, daemon, tmp_path, env=quotas, n2_args=("--api-group", str(nobody)),
                  n2_socket=sock)

        def quota(result: dict, name: str) -> None:
            assert result["status"] == 429 and result["body"]["quota"] == name, result
            assert f"quota {name} exceeded" in result["body"]["error"]

        # connections: a refresh is not a new one
        for i in range(2):
            body = bed.request()
            body["connection"]["path"]["path_segments"][1]["id"] = f"evil-seg-{i}"
            body["connection"]["id"] = f"evil-seg-{i}"
            assert bed.attack("POST", f"{FAR}/v1/peer/request", body)["status"] == 200
        quota(bed.attack("POST", f"{FAR}/v1/peer/request", bed.request()),
              "connections-per-peer")
        # registry records (the near daemon holds the registry; its quotas are the same)
        registry = f"https://{IP1}:7000"
        for i in range(3):
            assert bed.attack("POST", f"{registry}/v1/services",
                              {"name": f"evil-{i}"})["status"] == 200
        assert bed.attack("POST", f"{registry}/v1/services",
                          {"name": "evil-0", "payload": "IP"})["status"] == 200   # an update
        quota(bed.attack("POST", f"{registry}/v1/services", {"name": "evil-3"}),
              "records-per-registrant")
        # watch streams
        statuses = json.loads(sh(sys.executable, "-c", WATCHES, bed.evil_dir,
                                 f"{registry}/v1/services?watch=true", "3",
                                 netns=bed.evil_ns).stdout)
        assert statuses == [200, 200, 429], statuses
        # bodies: a peer's, a local user's; root's may be large
        quota(bed.attack("POST", f"{registry}/v1/services",
                         {"name": "big", "matches": [{"metadata": {"x" * 70_000: ""}}]}),
              "body-bytes")
        big = {"documents": [{"apiVersion": "networkservicemesh.io/v1",
                              "kind": "NetworkService", "metadata": {"name": f"s{i}"},
                              "spec": {"payload": "IP"}} for i in range(1500)]}
        status, body = as_user(nobody, nobody, sock, "POST", "/v1/apply", big)
        assert status == 429 and body["quota"] == "body-bytes", body
        # a local user's connections
        app_ns = netns("app")
        status, body = as_user(nobody, nobody, sock, "POST", "/v1/connections",
                               {"network_service": "remote-svc", "netns": app_ns})
        assert status == 201, body
        status, body = as_user(nobody, nobody, sock, "POST", "/v1/connections",
                               {"network_service": "remote-svc", "netns": netns("app2")})
        assert status == 429 and body["quota"] == "connections-per-user", body
        # legit traffic alongside: root's vWire from the client host
        conn = bed.near.cli_json("connect", "remote-svc", "--netns", bed.nsc_ns)
        assert ping(bed.nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                    2).returncode == 0
        metrics = bed.far.client.call("GET", "/metrics")   # text: Prometheus exposition
        assert 'nsmd_quota_refusals_total{quota="connections-per-peer"} 1.0' in metrics
        assert 'nsmd_quota_refusals_total{quota="body-bytes"} 1.0' in metrics
    finally:
        shutil.rmtree(run_dir)


def test_a_tunnel_goes_to_the_callers_own_address_whatever_the_offer_names(netns, daemon,
                                                                           tmp_path):
    """A client behind NAT offers its private address; an attacker could name a third
    party's. Either way the tunnel is aimed at the address the caller's TLS connection came
    from (it used to be refused as tunnel_offer_address)."""
    bed = Bed(netns, daemon, tmp_path)
    offer = bed.request()
    offer["mechanism_preferences"][0]["parameters"]["src_ip"] = IP1   # a third party's
    result = bed.attack("POST", f"{FAR}/v1/peer/request", offer)
    assert result["status"] == 200, result
    assert result["body"]["mechanism"]["parameters"]["src_ip"] == IP_EVIL
    (held,) = bed.far.cli_json("get", "connections")
    assert held["mechanism"]["parameters"]["src_ip"] == IP_EVIL


def test_every_refusal_is_in_the_audit_trail_once(netns, daemon, tmp_path):
    """Policy denials were not logged. Each 403 and 429 is now one log line (JSON with
    --log-format json: its policy or quota, the caller, the request) and counted."""
    bed = Bed(netns, daemon, tmp_path, env={"NSMD_LOG_FORMAT": "json"})
    refused(bed.attack("POST", f"{FAR}/v1/peer/request", bed.request(aud=N1)),
            "tokens_chained")   # the caller's token is for another daemon
    lines = [json.loads(line) for line in bed.far.log().splitlines() if line.startswith("{")]
    audit = [line for line in lines if line["logger"] == "nsmd.audit"]
    assert len(audit) == 1, audit
    (entry,) = audit
    assert entry["policy"] == "tokens_chained" and entry["subject"].startswith(EVIL), entry
    assert entry["request"] == "POST /v1/peer/request" and entry["level"] == "warning"
    metrics = bed.far.client.call("GET", "/metrics")
    assert 'nsmd_denials_total{policy="tokens_chained"} 1.0' in metrics
